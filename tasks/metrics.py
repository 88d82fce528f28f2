"""Prometheus tasks. "No data" is reported as such (`QueryResult.samples == []`, `ThresholdCheck.no_data`)
and must never be read as healthy; Prometheus being unreachable raises TransientError (retried)."""

from __future__ import annotations

from datetime import datetime

from k8s_runbooks.models import QueryResult, RangeSeries, ThresholdCheck
from k8s_runbooks.prom import promql
from k8s_runbooks.prom.client import Comparison, PromClient
from k8s_runbooks.settings import get_settings
from tasks._retry import runbook_task

QUERY_TIMEOUT_S = 60


def _client() -> PromClient:
    settings = get_settings()
    return PromClient(settings.prometheus_url, timeout=settings.http_timeout_seconds)


@runbook_task(name="prom-instant", timeout_seconds=QUERY_TIMEOUT_S)
def prom_instant(query: str, at: datetime | None = None) -> QueryResult:
    with _client() as client:
        return client.instant(query, at=at)


@runbook_task(name="prom-range", timeout_seconds=QUERY_TIMEOUT_S)
def prom_range(query: str, start: datetime, end: datetime, step: str = "30s") -> RangeSeries:
    with _client() as client:
        return client.range(query, start, end, step)


@runbook_task(name="restart-rate", timeout_seconds=QUERY_TIMEOUT_S)
def restart_rate(namespace: str, deployment: str, window: str = "5m") -> QueryResult:
    """Restarts per pod of the Deployment over `window` (one sample per pod, label `pod`)."""
    with _client() as client:
        return client.instant(promql.restart_increase(namespace, deployment, window))


@runbook_task(name="ready-replicas", timeout_seconds=QUERY_TIMEOUT_S)
def ready_replicas(namespace: str, deployment: str) -> float | None:
    """Available replicas as Prometheus sees them; None when Prometheus has no data for the Deployment."""
    with _client() as client:
        result = client.instant(promql.ready_replicas(namespace, deployment))
    return result.samples[0][1] if result.samples else None


@runbook_task(name="check-threshold", timeout_seconds=QUERY_TIMEOUT_S)
def check_threshold(name: str, query: str, threshold: float, comparison: Comparison = ">") -> ThresholdCheck:
    with _client() as client:
        return client.check_threshold(name, query, threshold, comparison)


@runbook_task(name="crash-condition-active", timeout_seconds=QUERY_TIMEOUT_S)
def crash_condition_active(namespace: str, deployment: str, window: str = "5m") -> ThresholdCheck:
    """The PodCrashLooping condition for one Deployment, evaluated now: breached when any of its pods was
    in CrashLoopBackOff or restarted within `window`. 0 when healthy; no_data when Prometheus knows no
    pod of the Deployment (not healthy: unknown)."""
    with _client() as client:
        return client.check_threshold("PodCrashLooping", promql.crash_looping(namespace, deployment, window), 0, ">")
