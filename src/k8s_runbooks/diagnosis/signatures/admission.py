"""Admission: the API server refused to create an object (quota exceeded, service account missing). The
controller's `FailedCreate` event quotes the refusal; a quota at its hard limit with an object of the
application missing tells the same story when no event names it (a Service or PVC refused to `kubectl apply`)."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis
from k8s_runbooks.diagnosis.quantity import parse_quantity

_EXCEEDED = re.compile(r"exceeded quota: (?P<quota>[\w.-]+), requested: (?P<req>[^,]+(?:,\s*[\w./-]+=[^,]+)*?), used:")
_SA = re.compile(r'error looking up service account (?P<ns>[\w.-]+)/(?P<sa>[\w.-]+): serviceaccount "[^"]+" not found')
_POD_OF_RS = re.compile(r'pods "(?P<pod>[\w.-]+)"')


def _resource_cause(requested: str) -> Cause | None:
    r = requested.lower()
    if "storage" in r or "persistentvolumeclaims" in r:
        return Cause.quota_storage_exceeded
    if "memory" in r:
        return Cause.quota_memory_exceeded
    if "cpu" in r:
        return Cause.quota_cpu_exceeded
    if re.search(r"\bpods\b", r) or "count/pods" in r:
        return Cause.quota_pods_exceeded
    if "services" in r:
        return Cause.quota_services_exceeded
    return None


def _owner_workload(ctx: Context, kind: str, name: str) -> str | None:
    if kind == "ReplicaSet":
        rs = next((r for r in ctx.e.replicasets if r.name == name), None)
        if rs is not None and rs.owner:
            return rs.owner
        m = re.match(r"^(.+)-[a-z0-9]{6,10}$", name)
        return m.group(1) if m else None
    return name


def quota_events(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for ev in ctx.live_events("FailedCreate"):
        m = _EXCEEDED.search(ev.message)
        if not m:
            continue
        cause = _resource_cause(m.group("req"))
        if cause is None:
            continue
        if ctx.e.quotas_listed and m.group("quota") not in {q.name for q in ctx.e.quotas}:
            continue  # the quota is gone (removed or renamed since): its refusals, kept for an hour, are history
        workload = _owner_workload(ctx, ev.object.kind, ev.object.name)
        wl = ctx.workloads.get(workload or "")
        rollout_blocked = wl is not None and wl.replicas is not None and wl.updated_replicas is not None and wl.updated_replicas < wl.replicas
        stuck = (workload in ctx.troubled or rollout_blocked) if workload else False
        recent = ev.age_seconds is None or ev.age_seconds < 600
        if wl is not None and not stuck and wl.replicas is not None and (wl.ready_replicas or 0) >= wl.replicas:
            continue  # the workload has every pod it wants: the quota does not block it now, however recent the refusal
        conf = 0.95 if stuck and recent else (0.8 if stuck or recent else 0.45)
        out.append(ctx.hyp(cause, ctx.namespace_ref(), conf,
                           f"ResourceQuota {m.group('quota')} refuses new pods of {workload or ev.object.name} "
                           f"(requested {m.group('req').strip()})", [ctx.event_fact(ev)],
                           quota=m.group("quota"), workload=workload or "", requested=m.group("req").strip()))
    return out


def quota_at_limit(ctx: Context) -> list[Hypothesis]:
    """Services / PVCs the application declares are missing while a quota on them is used up (kubectl apply
    was refused, so no controller event exists)."""
    out: list[Hypothesis] = []
    missing = {(m.kind, m.name) for m in ctx.e.declared_missing}
    for q in ctx.e.quotas:
        for key, hard in q.hard.items():
            used = q.used.get(key)
            hv, uv = parse_quantity(hard), parse_quantity(used)
            if hv is None:
                continue
            k = key.lower()
            if k in ("services", "count/services"):
                absent = sorted(n for k_, n in missing if k_ == "Service")
                if uv is not None and uv >= hv:
                    facts = [ctx.field_fact(f"resourcequota/{q.name} status", f"{key}: {used}/{hard}")]
                    facts += [Fact(source="absence", ref=f"service/{n}", text="declared by the application, not in the cluster")
                              for n in absent[:2]]
                    out.append(ctx.hyp(Cause.quota_services_exceeded, ctx.namespace_ref(), 0.95 if absent else 0.6,
                                       f"ResourceQuota {q.name} is at its limit of {hard} services", facts, quota=q.name))
            elif "storage" in k or k in ("persistentvolumeclaims", "count/persistentvolumeclaims"):
                refused = _missing_claims(ctx)
                absent = sorted(n for k_, n in missing if k_ == "PersistentVolumeClaim")
                if refused or absent or (uv is not None and uv >= hv):
                    facts = [ctx.field_fact(f"resourcequota/{q.name} status", f"{key}: {used}/{hard}")]
                    facts += [ctx.event_fact(e) for e in refused[:2]]
                    facts += [Fact(source="absence", ref=f"persistentvolumeclaim/{n}",
                                   text="declared by the application, not in the cluster") for n in absent[:1]]
                    out.append(ctx.hyp(Cause.quota_storage_exceeded, ctx.namespace_ref(), 0.95 if (refused or absent) else 0.5,
                                       f"ResourceQuota {q.name} limits {key} to {hard}; a claim the pods need was refused",
                                       facts, quota=q.name))
            elif uv is not None and uv >= hv and hv > 0:
                cause = _resource_cause(k)
                if cause is not None and ctx.troubled:
                    out.append(ctx.hyp(cause, ctx.namespace_ref(), 0.55,
                                       f"ResourceQuota {q.name} is used up ({key}: {used}/{hard})",
                                       [ctx.field_fact(f"resourcequota/{q.name} status", f"{key}: {used}/{hard}")], quota=q.name))
    return out


def _missing_claims(ctx: Context) -> list:
    return [e for e in ctx.live_events("FailedScheduling") if re.search(r'persistentvolumeclaim "[^"]+" not found', e.message)]


def service_account(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    known = set(ctx.e.service_accounts) if ctx.e.service_accounts is not None else None
    seen: set[str] = set()
    for ev in ctx.live_events("FailedCreate"):
        m = _SA.search(ev.message)
        if not m:
            continue
        sa = m.group("sa")
        workload = _owner_workload(ctx, ev.object.kind, ev.object.name) or ""
        if workload in seen:
            continue
        if known is not None and sa in known:
            continue  # it exists now: the event was a start-up race, not this incident
        seen.add(workload)
        stuck = workload in ctx.troubled
        conf = 0.95 if stuck and known is not None else (0.85 if stuck else 0.5)
        out.append(ctx.hyp(Cause.service_account_missing, ctx.app(workload), conf,
                           f"pods of {workload} are refused: service account {sa} does not exist",
                           [ctx.event_fact(ev)], service_account=sa))
    return out


SIGNATURES = (quota_events, quota_at_limit, service_account)
