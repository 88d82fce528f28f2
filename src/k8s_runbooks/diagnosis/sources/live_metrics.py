"""What Prometheus adds to live evidence, as anomalies in the same words recorded incidents use: firing
alerts of the namespace, services whose median latency rose against the same window `BASELINE_OFFSET` ago,
pods throttled while their CPU use jumped. Prometheus being down is a note, never a failed diagnosis."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.prom import promql
from k8s_runbooks.prom.client import PromClient, QueryResult
from k8s_runbooks.settings import Settings

WINDOW = "5m"
BASELINE_OFFSET = "30m"
MIN_SLOWDOWN = 2.0  # current median at least twice the baseline's
THROTTLED_SHARE = 0.25


def _by(result: object, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in getattr(result, "samples", []):
        key = labels.get(label)
        if key and value == value:  # NaN (no traffic) is not a value
            out[key] = float(value)
    return out


def _pct(normal: float, current: float) -> str:
    return f"(+{(current / normal - 1) * 100:.1f}%)" if normal > 0 else "(New Spike)"


def add_metrics(e: ev.Evidence, settings: Settings) -> None:
    """Append the namespace's Prometheus anomalies to `e` (its pods name the owners of throttled pods)."""
    anomalies, notes = metric_anomalies(e.namespace, e.pods, settings)
    e.anomalies += anomalies
    e.notes += notes


def metric_anomalies(namespace: str, pods: list[ev.Pod], settings: Settings) -> tuple[list[ev.Anomaly], list[str]]:
    """The anomalies of `namespace` and what could not be read, without touching shared evidence: the live
    collector runs this beside its Kubernetes reads. The queries run at once (each with the client's timeout);
    the CPU baseline is asked for only when a pod is throttled."""
    e = ev.Evidence(source="live", namespace=namespace, pods=pods)
    try:
        with PromClient(settings.prometheus_url, timeout=settings.http_timeout_seconds) as prom, \
                ThreadPoolExecutor(max_workers=4, thread_name_prefix="prometheus") as pool:

            def ask(expr: str) -> Future[QueryResult]:
                return pool.submit(prom.instant, expr)

            alerts = ask(promql.firing_alerts(namespace))
            latency = (ask(promql.namespace_latency_quantile(namespace, 0.5, WINDOW)),
                       ask(promql.namespace_latency_quantile(namespace, 0.5, WINDOW, BASELINE_OFFSET)))
            throttling = ask(promql.namespace_cpu_throttling(namespace, WINDOW))
            _alerts(e, alerts.result())
            _latency(e, latency[0].result(), latency[1].result())
            throttled = _by(throttling.result(), "pod")
            if throttled:
                usage = (ask(promql.namespace_cpu_usage(namespace, WINDOW)),
                         ask(promql.namespace_cpu_usage(namespace, WINDOW, BASELINE_OFFSET)))
                _cpu(e, throttled, _by(usage[0].result(), "pod"), _by(usage[1].result(), "pod"))
    except RunbookError as exc:
        e.notes.append(f"Prometheus: {exc.message}")
    return e.anomalies, e.notes


def _alerts(e: ev.Evidence, firing: QueryResult) -> None:
    for labels, _value in firing.samples:
        entity = labels.get("service") or labels.get("deployment") or labels.get("pod") or labels.get("node") or ""
        kind = "Node" if labels.get("node") and not labels.get("service") else "Service"
        e.anomalies.append(ev.Anomaly(entity_kind=kind, entity=entity, category=f"ALERT {labels.get('alertname', '')}".strip(),
                                      detail=f"{labels.get('alertname', '')} firing ({labels.get('severity', '')})"))


def _latency(e: ev.Evidence, current: QueryResult, baseline: QueryResult) -> None:
    now = _by(current, "service")
    then = _by(baseline, "service")
    for svc, cur in now.items():
        base = then.get(svc)
        if base is None or cur < base * MIN_SLOWDOWN or cur < 0.05:
            continue  # no baseline, or not slower in a way a person would notice
        e.anomalies.append(ev.Anomaly(entity_kind="Service", entity=svc, category="LATENCY_DEGRADATION",
                                      detail=f"LATENCY_DEGRADATION [Slow Response] | p50latency: Normal={base * 1000:.2f}ms -> "
                                             f"Current={cur * 1000:.2f}ms {_pct(base, cur)}"))


def _cpu(e: ev.Evidence, throttled: dict[str, float], now: dict[str, float], then: dict[str, float]) -> None:
    owners = {p.name: p.workload or p.name for p in e.pods}
    for pod, share in throttled.items():
        if share < THROTTLED_SHARE or pod not in owners:
            continue
        svc = owners[pod]
        e.anomalies.append(ev.Anomaly(entity_kind="Service", entity=svc, category="RESOURCE_SATURATION",
                                      detail=f"RESOURCE_SATURATION [cpu_cfs] | Val: {share:.3f} (Throttled share of periods, pod {pod})"))
        if pod in now and pod in then:
            e.anomalies.append(ev.Anomaly(entity_kind="Service", entity=svc, category="RESOURCE_SATURATION",
                                          detail=f"RESOURCE_SATURATION [cpu core] | Normal={then[pod]:.2f} cores -> Current={now[pod]:.2f} cores "
                                                 f"{_pct(then[pod], now[pod])}"))


