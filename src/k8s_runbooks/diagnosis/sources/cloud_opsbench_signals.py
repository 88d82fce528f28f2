"""The non-kubectl tools of a recorded case: node component status (systemctl), service connectivity probes,
the service dependency tree, error logs in their three recorded shapes, and anomaly alerts. Free text is
redacted by the importer's one pass (`redaction.redact_evidence`) before the evidence leaves it."""

from __future__ import annotations

import json
import re
from typing import Any

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.sources.fast_json import loads

MAX_LOG_LINES = 300
_ACTIVE = re.compile(r"Active:\s*(?P<state>[^\n]*)")


def add_node_component(evidence: ev.Evidence, node: str, component: str, text: str) -> None:
    m = _ACTIVE.search(text)
    if m:
        state = m.group("state").strip()
        active: bool | None = state.startswith("active (running)")
    else:
        state, active = text.strip().splitlines()[0][:200] if text.strip() else "", None
    journal = [ln for ln in text.splitlines() if re.match(r"^[A-Z][a-z]{2} \d+ \d\d:\d\d:\d\d ", ln)]
    lines = journal[-20:]
    evidence.node_components.append(ev.NodeComponent(node=node, component=component, active=active, state=state, log_lines=lines))


def add_connectivity(evidence: ev.Evidence, service: str, port: Any, text: str) -> None:
    """'svc (ip:port) open / Connection Succeeded', 'Connection Failed', or one line per probing node."""
    results = re.findall(r"Connection (Succeeded|Failed)", text)
    if not results:
        return
    ok = all(r == "Succeeded" for r in results)
    detail = " ".join(ln.strip() for ln in text.strip().splitlines()[-4:])[:300]
    evidence.connectivity.append(ev.Connectivity(service=service, port=int(port) if str(port).isdigit() else None,
                                                 ok=ok, detail=detail))


def add_dependencies(evidence: ev.Evidence, service: str, text: str) -> None:
    called_by: list[str] = []
    calls: list[str] = []
    dbs: list[str] = []
    for line in text.splitlines():
        if line.startswith("[Upstream"):
            rest = line.split(":", 1)[1].strip()
            called_by = [s.strip() for s in rest.split(",") if s.strip() and not s.strip().startswith("(")]
        m = re.match(r"^[\s│]*[├└]── (?P<name>\S+)(?P<rest>.*)$", line)
        if m:
            (dbs if "Database" in m.group("rest") else calls).append(m.group("name"))
    evidence.dependencies = [d for d in evidence.dependencies if d.service != service]
    evidence.dependencies.append(ev.Dependency(service=service, calls=calls, called_by=called_by, databases=dbs))


def _flatten(value: Any) -> tuple[list[str], list[str]]:
    """(current lines, previous-container lines) from a list, a {'app':..., 'previous':...} dict or a pattern summary."""
    current: list[str] = []
    previous: list[str] = []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                return _flatten(loads(text))
            except ValueError:
                pass
        return [ln for ln in text.splitlines() if ln.strip()], []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                current.extend(ln for ln in item.splitlines() if ln.strip())
            elif isinstance(item, dict):
                current.append(json.dumps(item)[:2000])
        return current, previous
    if isinstance(value, dict):
        if "patterns" in value:
            for p in value.get("patterns") or []:
                if isinstance(p, dict) and p.get("sample"):
                    current.append(f"{p.get('sample')} (x{p.get('count', 1)})")
            return current, previous
        for key, item in value.items():
            lines, prev = _flatten(item)
            (previous if key == "previous" else current).extend(lines + prev)
    return current, previous


_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?\s+")
_FRAME = re.compile(r"^\s*(?:at [\w$.<>]+\(|\.\.\. \d+ (?:more|common frames omitted))")
_NUMBERS = re.compile(r"\d+")


def condense(lines: list[str]) -> list[str]:
    """Log lines worth reading: container-runtime timestamps cut, stack frames dropped, repeats kept once."""
    seen: set[str] = set()
    out = []
    for raw in lines:
        line = _STAMP.sub("", raw).rstrip()
        if not line.strip() or _FRAME.match(line):
            continue
        shape = _NUMBERS.sub("#", line)
        if shape in seen:
            continue
        seen.add(shape)
        out.append(line[:2000])
    return out


def add_logs(evidence: ev.Evidence, service: str, value: Any, tail: bool = False) -> None:
    current, previous = _flatten(value)
    for lines, prev in ((current, False), (previous, True)):
        lines = condense(lines)
        if not lines:
            continue
        kept = lines[-MAX_LOG_LINES:] if tail else lines[:MAX_LOG_LINES]
        evidence.logs.append(ev.LogExcerpt(workload=service, previous=prev, lines=kept))


def add_alerts(evidence: ev.Evidence, value: dict[str, Any]) -> None:
    for alert in value.get("alerts") or []:
        if not isinstance(alert, dict):
            continue
        if "raw_error" in alert:  # failed user requests seen at the entry service
            evidence.anomalies.append(ev.Anomaly(
                entity_kind="Service", entity=str(alert.get("entry_service", "")), category="REQUEST_ERRORS",
                detail=f"{alert.get('request_method', '')} {alert.get('url', '')}: {alert.get('raw_error', '')} x{alert.get('occurrences', 1)}"))
            continue
        kind = str(alert.get("entity_type") or alert.get("type") or "Service")
        entity = str(alert.get("entity_name") or alert.get("name") or "")
        for item in alert.get("evidence") or []:
            text = str(item)
            category = text.split(" ", 1)[0].strip()
            evidence.anomalies.append(ev.Anomaly(entity_kind=kind, entity=entity, category=category, detail=text[:500]))
