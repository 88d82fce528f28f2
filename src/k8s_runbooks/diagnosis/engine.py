"""`diagnose(evidence, symptom) -> Diagnosis`: every signature looks at the evidence, their hypotheses are
merged per (cause, object), weighed against the symptom, and ranked. Pure and deterministic: no clock, no
network, no randomness; the same evidence always gives the same ranking."""

from __future__ import annotations

import time

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Evidence
from k8s_runbooks.diagnosis.hypothesis import Diagnosis, Hypothesis, Layer
from k8s_runbooks.diagnosis.signatures import ALL, Signature

MAX_HYPOTHESES = 10

# What a symptom says about where to look: the layers whose failures produce it get a small lift.
_SYMPTOM_LAYERS: tuple[tuple[tuple[str, ...], frozenset[Layer]], ...] = (
    (("latency", "slow", "degradation", "quality"), frozenset({Layer.performance, Layer.infrastructure})),
    (("restart", "crash"), frozenset({Layer.runtime, Layer.startup})),
    (("pending", "unschedulable"), frozenset({Layer.scheduling, Layer.admission})),
)


def _symptom_layers(symptom: str) -> frozenset[Layer]:
    s = symptom.lower()
    return frozenset().union(*[layers for words, layers in _SYMPTOM_LAYERS if any(w in s for w in words)])


def _merge(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    best: dict[tuple[str, str, str], Hypothesis] = {}
    for h in hypotheses:
        key = (h.cause.value, h.object.kind, h.object.name)
        known = best.get(key)
        if known is None:
            best[key] = h
            continue
        top, other = (h, known) if h.confidence > known.confidence else (known, h)
        facts = top.facts + [f for f in other.facts if f not in top.facts]
        # Two signatures agreeing is more evidence than either alone.
        best[key] = top.model_copy(update={"facts": facts[:8], "confidence": min(1.0, top.confidence + 0.02)})
    return list(best.values())


def _attribute_revisions(ctx: Context, hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """Mark template causes that arrived with a Deployment's newest revision (its pods are the failing ones and
    an older revision exists): rolling back is then the fix (`plan`)."""
    out = []
    for h in hypotheses:
        sets = sorted((r for r in ctx.e.replicasets if r.owner == h.object.name and r.revision is not None),
                      key=lambda r: r.revision or 0)
        bad = [p for p in ctx.pods_by_wl.get(h.object.name, []) if ctx.pod_unhealthy(p)]
        if h.object.kind == "Deployment" and len(sets) >= 2 and bad and all(p.owner and p.owner.name == sets[-1].name for p in bad):
            h = h.model_copy(update={"details": {**h.details, "introduced_by_revision": str(sets[-1].revision),
                                                 "previous_revision": str(sets[-2].revision)}})
        out.append(h)
    return out


def _focused(h: Hypothesis, focus: str | None, ctx: Context) -> bool:
    if not focus:
        return False
    if h.object.name == focus:
        return True
    return h.object.kind == "Node" and any(p.node == h.object.name for p in ctx.pods_by_wl.get(focus, []))


def diagnose(evidence: Evidence, symptom: str = "", signatures: tuple[Signature, ...] = ALL,
             focus: str | None = None) -> Diagnosis:
    """Ranked hypotheses for `evidence`. `focus` (a service or workload the alert names) ranks its causes first
    among equals; `symptom` lifts the layers that produce it."""
    started = time.perf_counter()
    ctx = Context(evidence, symptom)
    found: list[Hypothesis] = []
    notes = list(evidence.notes)
    for signature in signatures:
        try:
            found += signature(ctx)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:  # one broken rule never hides the rest
            notes.append(f"signature {signature.__module__.rsplit('.', 1)[-1]}.{signature.__name__} failed: {exc!r}")
    lifted = _symptom_layers(symptom)
    ranked = []
    for h in _attribute_revisions(ctx, _merge(found)):
        lift = (0.03 if h.layer in lifted else 0.0) + (0.04 if _focused(h, focus, ctx) else 0.0)
        if lift:
            h = h.model_copy(update={"confidence": min(1.0, round(h.confidence + lift, 3))})
        ranked.append(h)
    ranked.sort(key=lambda h: (-h.confidence, h.layer.value, h.cause.value, h.object.name))
    return Diagnosis(namespace=evidence.namespace, symptom=symptom, hypotheses=ranked[:MAX_HYPOTHESES], notes=notes,
                     elapsed_ms=round((time.perf_counter() - started) * 1000, 2))
