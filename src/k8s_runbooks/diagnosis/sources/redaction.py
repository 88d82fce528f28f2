"""One redaction pass over collected evidence, before it leaves a source (and again when a snapshot is read,
in case it was written by hand): event and container messages, literal env values, log lines."""

from __future__ import annotations

from collections.abc import Callable

from k8s_runbooks.diagnosis.evidence import Evidence
from k8s_runbooks.redact import redact_many


def redact_evidence(evidence: Evidence) -> int:
    """Redact every free-text field of `evidence` in place; returns the number of secrets replaced."""
    texts: list[str] = []
    setters: list[Callable[[str], None]] = []

    def add(value: str | None, setter: Callable[[str], None]) -> None:
        if value:
            texts.append(value)
            setters.append(setter)

    for e in evidence.events:
        add(e.message, lambda v, e=e: setattr(e, "message", v))
    for p in evidence.pods:
        for c in p.containers:
            for st in (c.state, c.last_state):
                if st is not None:
                    add(st.message, lambda v, st=st: setattr(st, "message", v))
    specs = [w.template for w in evidence.workloads] + [p.spec for p in evidence.pods] + [r.template for r in evidence.replicasets]
    for spec in specs:
        for c in (spec.containers + spec.init_containers) if spec else []:
            for var in c.env:
                add(var.value, lambda v, var=var: setattr(var, "value", v))
    for excerpt in evidence.logs:
        for i, line in enumerate(excerpt.lines):
            add(line, lambda v, lines=excerpt.lines, i=i: lines.__setitem__(i, v))
    for comp in evidence.node_components:
        for i, line in enumerate(comp.log_lines):
            add(line, lambda v, lines=comp.log_lines, i=i: lines.__setitem__(i, v))
    for items in (evidence.secrets or [], evidence.config_maps or []):
        for item in items:
            for key, value in item.coordinates.items():
                add(value, lambda v, c=item.coordinates, k=key: c.__setitem__(k, v))
    for a in evidence.anomalies:
        add(a.detail, lambda v, a=a: setattr(a, "detail", v))
    for c in evidence.connectivity:
        add(c.detail, lambda v, c=c: setattr(c, "detail", v))
    redacted, count = redact_many(texts)
    for setter, value in zip(setters, redacted):
        setter(value)
    return count
