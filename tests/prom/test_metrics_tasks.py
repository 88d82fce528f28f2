"""tasks/metrics.py inside real Prefect flow runs against the backfilled Prometheus."""

from __future__ import annotations

import logging

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from k8s_runbooks.prom import promql
from k8s_runbooks.settings import get_settings
from tasks import metrics
from tests.helpers.http_receiver import free_port
from tests.prom.conftest import RunningPrometheus

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    # Generous: other test suites share these 2 cores, and the temporary server then starts slowly.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def prom_env(monkeypatch: pytest.MonkeyPatch, prometheus: RunningPrometheus) -> Iterator[RunningPrometheus]:
    monkeypatch.setenv("K8S_RUNBOOKS_PROMETHEUS_URL", prometheus.url)
    get_settings.cache_clear()
    yield prometheus
    get_settings.cache_clear()


def test_tasks_in_a_flow(prom_env: RunningPrometheus) -> None:
    at = datetime.fromtimestamp(prom_env.end, tz=timezone.utc)

    @flow
    def evidence() -> tuple:
        p95 = metrics.prom_instant(promql.latency_quantile("shop", "checkout", 0.95), at=at)
        # "now" is 3 h after the backfilled history: Prometheus has no current data for these.
        return p95, metrics.crash_condition_active("shop", "checkout-v2"), metrics.ready_replicas("shop", "checkout")

    p95, crash_now, ready_now = evidence()
    assert p95.samples[0][1] > 0.3
    assert crash_now.no_data and not crash_now.breached  # unknown, never reported as healthy
    assert ready_now is None


def test_prometheus_down_is_retried_then_fails_transient(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("K8S_RUNBOOKS_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    fast = metrics.restart_rate.with_options(retry_delay_seconds=0)

    @flow
    def restarts() -> dict:
        state = fast("shop", "checkout", return_state=True)
        return {"failed": state.is_failed(), "message": state.message}

    with caplog.at_level(logging.INFO, logger="prefect.task_runs"):
        outcome = restarts()
    get_settings.cache_clear()
    assert outcome["failed"]
    assert "TransientError: cannot connect to Prometheus" in outcome["message"]
    # Every attempt is logged by the task engine in this process (reading the task run back from the server
    # depends on its events pipeline, which is asynchronous and was seen to drop items under load).
    attempts = [r for r in caplog.records if r.name == "prefect.task_runs"
                and "Task run failed with exception: TransientError('cannot connect to Prometheus" in r.getMessage()]
    assert len(attempts) == 1 + metrics.restart_rate.retries
