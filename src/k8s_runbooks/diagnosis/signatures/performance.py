"""Performance: everything runs, but slowly. CPU throttling names the saturated service; otherwise the
slowest service whose own dependencies are healthy is where the delay enters (its callers only inherit it)."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis

_PCT = re.compile(r"\(\+(?P<pct>[\d.]+)%\)")
_THROTTLE = re.compile(r"cpu_cfs|Throttl|cpu core|cpu usage", re.I)


def _increase(detail: str) -> float:
    return max((float(m.group("pct")) for m in _PCT.finditer(detail)), default=0.0)


def cpu(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    by_service: dict[str, list[str]] = {}
    for a in ctx.e.anomalies:
        if a.entity_kind != "Node" and a.category.startswith("RESOURCE_SATURATION") and _THROTTLE.search(a.detail):
            by_service.setdefault(a.entity, []).append(a.detail)
    for svc, details in by_service.items():
        throttled = any("cfs" in d.lower() or "throttl" in d.lower() for d in details)
        # A service throttled every day is a standing condition; the incident is usage that jumped with it.
        jumped = any("cpu core" in d.lower() and _increase(d) >= 100 for d in details)
        slow = any(a.entity == svc and a.category.startswith("LATENCY") for a in ctx.e.anomalies)
        wl = svc if svc in ctx.workloads else (ctx.workload_for_labels(ctx.services[svc].selector) if svc in ctx.services else svc)
        spec = ctx.spec_of(wl or svc)
        limit = next((c.limits.get("cpu") for c in (spec.containers if spec else []) if c.limits.get("cpu")), None)
        facts = [Fact(source="alert", ref=f"service/{svc}", text=d) for d in details[:3]]
        if limit:
            facts.append(ctx.field_fact(f"deployment/{wl} resources", f"cpu limit {limit}"))
        measured = any(o.service == svc or o.workload == wl for o in ctx.e.latency
                       if o.current_ms is not None and o.current_ms > o.threshold_ms)
        conf = 0.93 if throttled and (jumped or measured) else (0.6 if jumped and slow else (0.4 if throttled else 0.3))
        out.append(ctx.hyp(Cause.cpu_saturated, ctx.app(wl or svc), conf,
                           f"{svc} is CPU-throttled" + (f" at its limit of {limit}" if limit else ""), facts, cpu_limit=limit or ""))
    return out


_LATENCY = re.compile(r"(?P<q>p\d\d)latency: Normal=(?P<n>[\d.]+)ms -> Current=(?P<c>[\d.]+)ms")


def _slowdown(normal: float, current: float) -> float:
    return current / normal if normal > 0 else (current if current > 0 else 1.0)


def latency_profile(ctx: Context) -> tuple[dict[str, float], dict[str, float], dict[str, list[str]]]:
    """(broad, tail, details): services whose median latency rose ("broad": every request is slower, the delay is on
    their own path) and those where only a tail percentile rose ("tail": some requests, e.g. a slow caller's)."""
    broad: dict[str, float] = {}
    tail: dict[str, float] = {}
    details: dict[str, list[str]] = {}
    for a in ctx.e.anomalies:
        if a.entity_kind != "Service" or not a.category.startswith("LATENCY"):
            continue
        details.setdefault(a.entity, []).append(a.detail)
        for m in _LATENCY.finditer(a.detail):
            factor = _slowdown(float(m.group("n")), float(m.group("c")))
            if factor < 2.0:
                continue
            target = broad if m.group("q") == "p50" else tail
            target[a.entity] = max(target.get(a.entity, 0.0), float(m.group("c")) - float(m.group("n")))
    for svc in broad:
        tail.pop(svc, None)
    return broad, tail, details


def latency_roots(ctx: Context) -> tuple[list[str], dict[str, float], dict[str, list[str]]]:
    """Where the delay enters: slow services none of whose callees is slow in the same way (callers of a
    slow service are slow too). Median-slow services are judged first; tail-only ones when there are none."""
    broad, tail, details = latency_profile(ctx)
    slow = broad or tail
    calls = {d.service: set(d.calls) for d in ctx.e.dependencies}
    roots = [s for s in slow if not (calls.get(s, set()) & (set(slow) - {s}))]
    # A callee whose (tail) latency grew by at least as much as the caller's median explains the caller's delay.
    moved = []
    for r in roots or list(slow):
        deeper = [c for c in calls.get(r, set()) if tail.get(c, 0.0) >= slow[r] > 0]
        moved.append(max(deeper, key=lambda c: tail[c]) if deeper else r)
    merged = {**tail, **slow}
    ordered = sorted(dict.fromkeys(moved), key=lambda s: -merged.get(s, 0.0))
    return ordered, merged, details


def latency(ctx: Context) -> list[Hypothesis]:
    roots, slow, details = latency_roots(ctx)
    if not roots:
        return []
    calls = {d.service: set(d.calls) for d in ctx.e.dependencies}
    out = []
    for i, svc in enumerate(roots[:3]):
        facts = [Fact(source="alert", ref=f"service/{svc}", text=d) for d in details.get(svc, [])[:2]]
        callers = sorted(s for s in details if svc in calls.get(s, set()))
        if callers:
            facts.append(Fact(source="alert", ref=f"slow callers of {svc}", text=", ".join(callers)[:300]))
        conf = (0.85 if len(roots) == 1 else 0.62) - 0.15 * i
        out.append(ctx.hyp(Cause.pod_network_delay, ctx.app(svc), conf,
                           f"latency enters at {svc} (+{slow.get(svc, 0):.0f} ms) while what it calls is not slower", facts))
    return out


def measured_latency(ctx: Context) -> list[Hypothesis]:
    """A runbook's own latency measurement: slow since the newest revision (which was fast when it began), or
    slow in a few pods only (outliers; the other replicas are fine)."""
    out: list[Hypothesis] = []
    for obs in ctx.e.latency:
        if obs.current_ms is None or obs.current_ms <= obs.threshold_ms:
            continue
        wl = obs.workload or obs.service
        obj = ctx.app(wl)
        base = Fact(source="metric", ref=f"p{round(obs.quantile * 100)} latency of {obs.service}",
                    text=f"{obs.current_ms:.0f} ms (threshold {obs.threshold_ms:g} ms)")
        slow = {p: v for p, v in obs.by_pod_ms.items() if v > obs.threshold_ms}
        revision = _revision_brought_it(ctx, wl, obs, slow)
        if revision is not None:
            out.append(ctx.hyp(Cause.slow_revision, obj, 0.9, f"{wl} is slow since revision {revision[0]}; it was fast before",
                               [base, revision[1]], introduced_by_revision=str(revision[0]), previous_revision=str(revision[2])))
        if slow and len(slow) < len(obs.by_pod_ms):
            median = sorted(obs.by_pod_ms.values())[len(obs.by_pod_ms) // 2]
            outliers = sorted(p for p, v in slow.items() if v > obs.outlier_factor * max(median, 1e-9))
            if outliers:
                facts = [base] + [Fact(source="metric", ref=f"pod/{p}", text=f"{obs.by_pod_ms[p]:.0f} ms (median pod {median:.0f} ms)")
                                  for p in outliers[:4]]
                out.append(ctx.hyp(Cause.slow_pods, obj, 0.8, f"{len(outliers)} pod(s) of {wl} are much slower than the others",
                                   facts, pods=",".join(outliers)))
    return out


def _revision_brought_it(ctx: Context, wl: str, obs, slow: dict[str, float]) -> tuple[int, Fact, int] | None:  # type: ignore[no-untyped-def]
    sets = sorted((r for r in ctx.e.replicasets if r.owner == wl and r.revision is not None), key=lambda r: r.revision or 0)
    if len(sets) < 2 or obs.before_newest_revision_ms is None or obs.before_newest_revision_ms > obs.threshold_ms:
        return None
    new, old = sets[-1], sets[-2]
    live = {p.name for p in ctx.e.pods if not p.terminating}
    # Prometheus still remembers pods the rollout replaced: only slow pods that still exist speak against it.
    others = [p for p in slow if p in live and not p.startswith(new.name + "-")]
    if others or (slow and not any(p.startswith(new.name + "-") for p in slow)):
        return None
    fact = Fact(source="metric", ref=f"replicaset/{new.name}",
                text=f"revision {new.revision} began with p{round(obs.quantile * 100)} {obs.before_newest_revision_ms:.0f} ms; "
                     f"previous revision {old.revision} ({old.name})")
    return int(new.revision or 0), fact, int(old.revision or 0)


SIGNATURES = (cpu, latency, measured_latency)
