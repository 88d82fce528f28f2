"""What Prometheus adds to live evidence, as anomalies in the same words recorded incidents use: firing
alerts of the namespace, services whose median latency rose against the same window `BASELINE_OFFSET` ago,
pods throttled while their CPU use jumped. Prometheus being down is a note, never a failed diagnosis."""

from __future__ import annotations

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.prom import promql
from k8s_runbooks.prom.client import PromClient
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
    try:
        with PromClient(settings.prometheus_url, timeout=settings.http_timeout_seconds) as prom:
            _alerts(e, prom)
            _latency(e, prom)
            _cpu(e, prom)
    except RunbookError as exc:
        e.notes.append(f"Prometheus: {exc.message}")


def _alerts(e: ev.Evidence, prom: PromClient) -> None:
    for labels, _value in prom.instant(promql.firing_alerts(e.namespace)).samples:
        entity = labels.get("service") or labels.get("deployment") or labels.get("pod") or labels.get("node") or ""
        kind = "Node" if labels.get("node") and not labels.get("service") else "Service"
        e.anomalies.append(ev.Anomaly(entity_kind=kind, entity=entity, category=f"ALERT {labels.get('alertname', '')}".strip(),
                                      detail=f"{labels.get('alertname', '')} firing ({labels.get('severity', '')})"))


def _latency(e: ev.Evidence, prom: PromClient) -> None:
    now = _by(prom.instant(promql.namespace_latency_quantile(e.namespace, 0.5, WINDOW)), "service")
    then = _by(prom.instant(promql.namespace_latency_quantile(e.namespace, 0.5, WINDOW, BASELINE_OFFSET)), "service")
    for svc, cur in now.items():
        base = then.get(svc)
        if base is None or cur < base * MIN_SLOWDOWN or cur < 0.05:
            continue  # no baseline, or not slower in a way a person would notice
        e.anomalies.append(ev.Anomaly(entity_kind="Service", entity=svc, category="LATENCY_DEGRADATION",
                                      detail=f"LATENCY_DEGRADATION [Slow Response] | p50latency: Normal={base * 1000:.2f}ms -> "
                                             f"Current={cur * 1000:.2f}ms {_pct(base, cur)}"))


def _cpu(e: ev.Evidence, prom: PromClient) -> None:
    throttled = _by(prom.instant(promql.namespace_cpu_throttling(e.namespace, WINDOW)), "pod")
    if not throttled:
        return
    now = _by(prom.instant(promql.namespace_cpu_usage(e.namespace, WINDOW)), "pod")
    then = _by(prom.instant(promql.namespace_cpu_usage(e.namespace, WINDOW, BASELINE_OFFSET)), "pod")
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


