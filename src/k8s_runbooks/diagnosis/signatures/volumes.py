"""Why a PersistentVolumeClaim stays Pending: the persistent-volume controller's events, then the binding
predicates replayed against every volume (storage class, label selector, capacity, access modes, already
bound). The volume that fails the fewest predicates names the cause: fix that one predicate and it binds."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Event, PersistentVolume, PersistentVolumeClaim, Pod
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis
from k8s_runbooks.diagnosis.quantity import parse_quantity

_CLASS_MISSING = re.compile(r'storageclass\.storage\.k8s\.io "(?P<sc>[^"]+)" not found')
_CLAIM_MISSING = re.compile(r'persistentvolumeclaim "(?P<claim>[^"]+)" not found')


def _claims_of(ctx: Context, pod: Pod) -> list[PersistentVolumeClaim]:
    spec = pod.spec or (ctx.spec_of(pod.workload) if pod.workload else None)
    names = {v.ref for v in (spec.volumes if spec else []) if v.kind == "persistentVolumeClaim" and v.ref}
    claims = [c for c in ctx.e.pvcs if c.name in names] if names else []
    return claims or [c for c in ctx.e.pvcs if c.status == "Pending"]


def _failures(claim: PersistentVolumeClaim, pv: PersistentVolume, ns: str) -> list[tuple[Cause, str]]:
    out: list[tuple[Cause, str]] = []
    if pv.claim and pv.claim != f"{ns}/{claim.name}":
        out.append((Cause.volume_claimed_by_other, f"{pv.name} is already bound to {pv.claim}"))
    if (claim.storage_class or "") != (pv.storage_class or "") and claim.storage_class is not None:
        out.append((Cause.storage_class_missing, f"{pv.name} has storage class '{pv.storage_class or ''}', the claim wants '{claim.storage_class}'"))
    if claim.selector and not claim.selector.items() <= pv.labels.items():
        want = ",".join(f"{k}={v}" for k, v in claim.selector.items())
        have = ",".join(f"{k}={v}" for k, v in pv.labels.items()) or "no labels"
        out.append((Cause.claim_selector_unmatched, f"{pv.name} has {have}; the claim selects {want}"))
    need, cap = parse_quantity(claim.requested), parse_quantity(pv.capacity)
    if need is not None and cap is not None and cap < need:
        out.append((Cause.claim_capacity_unavailable, f"{pv.name} offers {pv.capacity}; the claim requests {claim.requested}"))
    if claim.access_modes and not set(claim.access_modes) <= set(pv.access_modes):
        out.append((Cause.claim_access_mode_unavailable,
                    f"{pv.name} allows {','.join(pv.access_modes) or 'nothing'}; the claim needs {','.join(claim.access_modes)}"))
    return out


def claim_causes(ctx: Context, pod: Pod, workload: str, ev: Event) -> list[Hypothesis]:
    obj = ctx.app(workload)
    facts = [ctx.event_fact(ev)]
    m = _CLAIM_MISSING.search(ev.message)
    if m:  # the claim was never created: an admission refusal (quota) or a missing object
        return [ctx.hyp(Cause.quota_storage_exceeded, ctx.namespace_ref(), 0.6 if ctx.e.quotas else 0.35,
                        f"claim {m.group('claim')} that {pod.name} mounts does not exist", facts, claim=m.group("claim"))]
    out: list[Hypothesis] = []
    for claim in _claims_of(ctx, pod):
        cfacts = facts + [ctx.event_fact(e) for e in ctx.events("PersistentVolumeClaim", claim.name)[:2]]
        missing_class = next((_CLASS_MISSING.search(e.message) for e in ctx.events("PersistentVolumeClaim", claim.name)
                              if _CLASS_MISSING.search(e.message)), None)
        known_classes = {s.name for s in ctx.e.storage_classes}
        if missing_class or (claim.storage_class and ctx.e.storage_classes and claim.storage_class not in known_classes):
            sc = missing_class.group("sc") if missing_class else claim.storage_class
            out.append(ctx.hyp(Cause.storage_class_missing, obj, 0.95,
                               f"claim {claim.name} asks for storage class {sc}, which does not exist", cfacts,
                               claim=claim.name, storage_class=sc or ""))
            continue
        pvs = ctx.e.pvs
        if not pvs:
            out.append(ctx.hyp(Cause.claim_selector_unmatched if claim.selector else Cause.claim_capacity_unavailable, obj, 0.35,
                               f"claim {claim.name} is Pending and no persistent volume exists for it", cfacts, claim=claim.name))
            continue
        scored = sorted(((len(f), pv.name, f) for pv in pvs for f in [_failures(claim, pv, ctx.ns)]), key=lambda t: (t[0], t[1]))
        _, best_pv, fails = scored[0]
        if not fails:
            out.append(ctx.hyp(Cause.claim_capacity_unavailable, obj, 0.3,
                               f"claim {claim.name} is Pending though volume {best_pv} looks compatible", cfacts, claim=claim.name))
            continue
        for i, (cause, why) in enumerate(fails):
            conf = (0.93 if len(fails) == 1 else 0.8) - 0.2 * i
            out.append(ctx.hyp(cause, obj, conf, f"claim {claim.name} cannot bind: {why}",
                               cfacts + [Fact(source="field", ref=f"persistentvolume/{best_pv}", text=why)],
                               claim=claim.name, volume=best_pv))
        others = {c for _, _, fs in scored[1:] for c, _ in fs} - {c for c, _ in fails}
        out += [ctx.hyp(c, obj, 0.25, f"claim {claim.name}: other volumes fail on {c.value}", cfacts, claim=claim.name)
                for c in sorted(others, key=lambda c: c.value)]
    return out
