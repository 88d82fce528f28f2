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
        wl = svc if svc in ctx.workloads else (ctx.workload_for_labels(ctx.services[svc].selector) if svc in ctx.services else svc)
        spec = ctx.spec_of(wl or svc)
        limit = next((c.limits.get("cpu") for c in (spec.containers if spec else []) if c.limits.get("cpu")), None)
        facts = [Fact(source="alert", ref=f"service/{svc}", text=d) for d in details[:3]]
        if limit:
            facts.append(ctx.field_fact(f"deployment/{wl} resources", f"cpu limit {limit}"))
        out.append(ctx.hyp(Cause.cpu_saturated, ctx.app(wl or svc), 0.92 if throttled else 0.75,
                           f"{svc} is CPU-throttled" + (f" at its limit of {limit}" if limit else ""), facts, cpu_limit=limit or ""))
    return out


def latency(ctx: Context) -> list[Hypothesis]:
    slow: dict[str, float] = {}
    details: dict[str, list[str]] = {}
    for a in ctx.e.anomalies:
        if a.entity_kind == "Service" and a.category.startswith(("LATENCY", "THROUGHPUT_DROP", "TRAFFIC", "ERROR_SPIKE")):
            weight = _increase(a.detail) if a.category.startswith("LATENCY") else 50.0
            slow[a.entity] = slow.get(a.entity, 0.0) + weight
            details.setdefault(a.entity, []).append(a.detail)
    if not slow or any(a.category.startswith("RESOURCE_SATURATION") and _THROTTLE.search(a.detail) and a.entity_kind != "Node"
                       for a in ctx.e.anomalies):
        return []
    calls = {d.service: set(d.calls) for d in ctx.e.dependencies}
    # The delay enters where a slow service calls no slow service (callers of a slow service slow down too).
    roots = [s for s in slow if not (calls.get(s, set()) & set(slow))]
    ranked = sorted(roots or list(slow), key=lambda s: -slow[s])
    out = []
    for i, svc in enumerate(ranked[:3]):
        wl = svc if svc in ctx.workloads else svc
        facts = [Fact(source="alert", ref=f"service/{svc}", text=d) for d in details[svc][:3]]
        callers = sorted(s for s in slow if svc in calls.get(s, set()))
        if callers:
            facts.append(Fact(source="alert", ref="slow callers", text=", ".join(callers)[:300]))
        conf = (0.8 if roots and len(roots) == 1 else 0.65) - 0.2 * i
        out.append(ctx.hyp(Cause.pod_network_delay, ctx.app(wl), conf,
                           f"latency enters at {svc}: it is slow while everything it calls is not", facts))
    return out


SIGNATURES = (cpu, latency)
