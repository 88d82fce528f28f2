"""Steady-state probes with tolerances: ready replicas, p95 latency, firing alerts, no fault env left."""

from __future__ import annotations

import math

from k8s_runbooks.drills.alertmanager import firing_alerts
from k8s_runbooks.drills.kube_faults import active_env
from k8s_runbooks.drills.model import ProbeResult, SteadyState, SteadyStateReport
from k8s_runbooks.drills.fault_kinds import FAULT_VARS
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.kube.pods import read_deployment
from k8s_runbooks.prom import promql
from k8s_runbooks.prom.client import PromClient
from k8s_runbooks.settings import Settings, get_settings



def probe_replicas(namespace: str, deployment: str, ss: SteadyState, settings: Settings) -> ProbeResult:
    dep = read_deployment(get_kube(settings), namespace, deployment)
    desired = dep.spec.replicas if dep.spec.replicas is not None else 1
    st = dep.status
    ready = (st.ready_replicas or 0) if st else 0
    updated = (st.updated_replicas or 0) if st else 0
    total = (st.replicas or 0) if st else 0
    rolled = st is not None and (st.observed_generation or 0) >= (dep.metadata.generation or 0) and updated >= desired and total <= desired
    need = math.ceil(desired * ss.min_ready_ratio)
    ok = ready >= need and rolled
    observed = f"{ready}/{desired} ready" + ("" if rolled else ", rollout in progress")
    return ProbeResult(name="ready replicas", ok=ok, observed=observed, tolerance=f">= {need} ready, rollout complete")


def probe_p95(namespace: str, deployment: str, ss: SteadyState, settings: Settings) -> ProbeResult | None:
    if ss.p95_threshold_ms is None:
        return None
    query = promql.latency_quantile(namespace, ss.service or deployment, 0.95, ss.p95_window, service_label=ss.service_label)
    tolerance = f"< {ss.p95_threshold_ms:g} ms"
    try:
        with PromClient(settings.prometheus_url, timeout=settings.http_timeout_seconds) as prom:
            result = prom.instant(query)
    except RunbookError as exc:
        return ProbeResult(name="p95 latency", ok=False, observed=f"unknown: {exc}", tolerance=tolerance)
    values = [v for _, v in result.samples if math.isfinite(v)]
    if not values:
        return ProbeResult(name="p95 latency", ok=ss.p95_no_data_ok, observed="no data", tolerance=tolerance)
    ms = max(values) * 1000
    return ProbeResult(name="p95 latency", ok=ms < ss.p95_threshold_ms, observed=f"{ms:.0f} ms", tolerance=tolerance)


def probe_alerts(namespace: str, deployment: str, ss: SteadyState, settings: Settings) -> ProbeResult | None:
    if not ss.check_alerts:
        return None
    tolerance = f"<= {ss.max_firing_alerts} firing"
    try:
        alerts = firing_alerts(settings.alertmanager_url, namespace, deployment, ss.service, timeout=settings.http_timeout_seconds)
    except RunbookError as exc:
        return ProbeResult(name="firing alerts", ok=False, observed=f"unknown: {exc}", tolerance=tolerance)
    names = sorted({a.get("labels", {}).get("alertname", "?") for a in alerts})
    return ProbeResult(name="firing alerts", ok=len(alerts) <= ss.max_firing_alerts,
                       observed=f"{len(alerts)} firing" + (f" ({', '.join(names)})" if names else ""), tolerance=tolerance)


def probe_no_fault(namespace: str, deployment: str, settings: Settings) -> ProbeResult:
    left = active_env(get_kube(settings), namespace, deployment, FAULT_VARS)
    return ProbeResult(name="no fault injected", ok=not left,
                       observed=", ".join(f"{k}={v}" for k, v in left.items()) or "none", tolerance="no FAULT_* env")


def steady_state(namespace: str, deployment: str, ss: SteadyState, *, include_alerts: bool = True,
                 include_fault: bool = True, settings: Settings | None = None) -> SteadyStateReport:
    """Every probe runs (so the report says everything that is off), then the verdict."""
    s = settings or get_settings()
    probes = [probe_replicas(namespace, deployment, ss, s)]
    p95 = probe_p95(namespace, deployment, ss, s)
    if p95:
        probes.append(p95)
    if include_alerts:
        alerts = probe_alerts(namespace, deployment, ss, s)
        if alerts:
            probes.append(alerts)
    if include_fault:
        probes.append(probe_no_fault(namespace, deployment, s))
    return SteadyStateReport(ok=all(p.ok for p in probes), probes=probes)
