"""`diagnose(evidence, symptom) -> Diagnosis`: every signature looks at the evidence, their hypotheses are
merged per (cause, object), weighed against the symptom, and ranked. Pure and deterministic: no clock, no
network, no randomness; the same evidence always gives the same ranking."""

from __future__ import annotations

import time
from collections.abc import Callable

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Evidence, PodSpec
from k8s_runbooks.diagnosis.hypothesis import Cause, Diagnosis, Hypothesis, Layer
from k8s_runbooks.diagnosis.signatures import ALL, Signature

MAX_HYPOTHESES = 10
FOCUS_LIFT = 0.1

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


def _changed(cause: Cause, new: PodSpec | None, old: PodSpec | None) -> bool:
    """Did the newest revision change what `cause` depends on? Unknown templates (recorded cases): no claim."""
    if new is None or old is None:
        return False
    field = _CAUSE_FIELDS.get(cause)
    if field is None:
        return new != old  # a crash or a slowdown: any change of code or configuration can bring it
    return field(new) != field(old)


def _containers(spec: PodSpec, *attrs: str) -> list[tuple[object, ...]]:
    return [tuple(getattr(c, a) for a in attrs) for c in spec.containers + spec.init_containers]


_CAUSE_FIELDS: dict[Cause, Callable[[PodSpec], object]] = {
    Cause.node_selector_unsatisfiable: lambda s: s.node_selector,
    Cause.node_affinity_unsatisfiable: lambda s: s.node_affinity,
    Cause.anti_affinity_unsatisfiable: lambda s: s.pod_anti_affinity,
    Cause.taint_not_tolerated: lambda s: s.tolerations,
    Cause.insufficient_cpu: lambda s: _containers(s, "requests", "limits"),
    Cause.insufficient_memory: lambda s: _containers(s, "requests", "limits"),
    Cause.image_not_found: lambda s: _containers(s, "image"),
    Cause.registry_unresolvable: lambda s: _containers(s, "image"),
    Cause.image_pull_unauthorized: lambda s: (_containers(s, "image"), s.image_pull_secrets),
    Cause.secret_missing: lambda s: (_containers(s, "env", "env_from"), s.volumes),
    Cause.config_map_missing: lambda s: (_containers(s, "env", "env_from"), s.volumes),
    Cause.service_account_missing: lambda s: s.service_account,
    Cause.liveness_probe_wrong_port: lambda s: _containers(s, "liveness", "ports"),
    Cause.liveness_probe_wrong_protocol: lambda s: _containers(s, "liveness", "ports"),
    Cause.liveness_probe_too_aggressive: lambda s: _containers(s, "liveness"),
    Cause.readiness_probe_wrong_port: lambda s: _containers(s, "readiness", "ports"),
    Cause.readiness_probe_wrong_protocol: lambda s: _containers(s, "readiness", "ports"),
    Cause.env_address_wrong: lambda s: _containers(s, "env", "env_from"),
    Cause.dns_resolution_failed: lambda s: (s.dns_policy, s.dns_nameservers),
    Cause.volume_permission_denied: lambda s: (s.volumes, s.fs_group, s.run_as_user, _containers(s, "volume_mounts", "run_as_user")),
}


# Causes that fail deterministically when a container starts: one Ready pod of a template proves the template
# does not carry them.
_FAILS_EVERY_START = frozenset({Cause.secret_missing, Cause.config_map_missing, Cause.image_not_found,
                                Cause.registry_unresolvable, Cause.image_pull_unauthorized})


def _template_proven(ctx: Context, h: Hypothesis, replicaset: str) -> bool:
    """A cause that fails every start of a template (a missing Secret or ConfigMap, an image that cannot be pulled)
    cannot be the template's fault while pods of that same template run Ready: what changed is outside the
    template (the Secret was deleted, the registry lost the tag), so rolling back would not fix it."""
    if h.cause not in _FAILS_EVERY_START:
        return False
    return any(p.owner is not None and p.owner.name == replicaset and p.status == "Running" and not ctx.pod_in_trouble(p)
               for p in ctx.pods_by_wl.get(h.object.name, []))


def _attribute_revisions(ctx: Context, hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """Mark causes that arrived with a Deployment's newest revision: its pods are the failing ones, an older
    revision exists, and the newest changed what the cause depends on (a taint on the nodes is not a template
    change even if a restart made a new revision), and no Ready pod of that revision proves it works. Rolling back
    is then the fix (`plan`)."""
    out = []
    for h in hypotheses:
        sets = sorted((r for r in ctx.e.replicasets if r.owner == h.object.name and r.revision is not None),
                      key=lambda r: r.revision or 0)
        bad = [p for p in ctx.pods_by_wl.get(h.object.name, []) if ctx.pod_in_trouble(p)]
        if (h.object.kind == "Deployment" and len(sets) >= 2 and bad and all(p.owner and p.owner.name == sets[-1].name for p in bad)
                and not _template_proven(ctx, h, sets[-1].name)
                and (h.details.get("introduced_by_revision") or _changed(h.cause, sets[-1].template, sets[-2].template))):
            h = h.model_copy(update={"details": {**h.details, "introduced_by_revision": str(sets[-1].revision),
                                                 "previous_revision": str(sets[-2].revision)}})
        out.append(h)
    return out


def _focused(h: Hypothesis, focus: str | None, ctx: Context) -> bool:
    """About the workload the incident names: its own object, a node running its pods, or a namespace-wide
    cause (a quota) refusing its pods."""
    if not focus:
        return False
    if h.object.name == focus or h.details.get("workload") == focus:
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
        # The workload an alert or a runbook names is what the incident is about: its causes rank before
        # those of other workloads that happen to be failing in the same namespace.
        lift = (0.03 if h.layer in lifted else 0.0) + (FOCUS_LIFT if _focused(h, focus, ctx) else 0.0)
        if lift:
            h = h.model_copy(update={"confidence": min(1.0, round(h.confidence + lift, 3))})
        ranked.append(h)
    ranked.sort(key=lambda h: (-h.confidence, h.layer.value, h.cause.value, h.object.name))
    return Diagnosis(namespace=evidence.namespace, symptom=symptom, hypotheses=ranked[:MAX_HYPOTHESES], notes=notes,
                     elapsed_ms=round((time.perf_counter() - started) * 1000, 2))
