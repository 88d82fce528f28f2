"""Prometheus stopped: the runbooks must never read "no answer" as "healthy".

"Stopped" is a Prometheus URL with nothing listening (connection refused), what a client sees when the
server is down; the session's Prometheus keeps running for the other tests. Task retries use a 0.1 s
backoff factor here (K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS): same attempts, shorter waits.
"""

from __future__ import annotations

import pytest

from k8s_runbooks.drills.model import SteadyState
from k8s_runbooks.drills.probes import steady_state
from k8s_runbooks.kube.client import reset_clients
from k8s_runbooks.settings import Settings
from tests.conftest import Sandbox, free_ports
from tests.reliability._faults_helpers import NS, Api, Runbooks, audit_diff, writes

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def test_high_latency_escalates_with_no_data_and_changes_nothing(sandbox_only: Sandbox, tmp_path) -> None:
    api = Api(sandbox_only.api_url)
    runbooks = Runbooks(sandbox_only, tmp_path, K8S_RUNBOOKS_PROMETHEUS_URL=_dead_url(),
                        K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS="0.1", K8S_RUNBOOKS_COOLDOWN_SECONDS="0")
    before = api.audit()
    result = runbooks.run("high-latency", namespace=NS, service="checkout", approval="auto", stable_seconds=5,
                          monitor_stable_seconds=5, monitor_timeout_seconds=30)
    requests = audit_diff(before, api.audit())

    assert result.state == "FAILED", (result.state, result.message, result.stderr[-3000:])
    message = result.message or ""
    assert "no latency data" in message and "escalated" in message and "healthy" not in message, message
    assert result.retries["TransientError"] >= 3, "each Prometheus query is retried before the runbook gives up"
    # Nothing was planned for execution, let alone executed: no guard decision, no write to the cluster.
    assert [r for r in runbooks.guard_audit() if r["decision"] == "allowed"] == []
    assert writes(requests) == {}
    print(f"\nprometheus stopped: task retries {sum(result.retries.values())}, outcome {message!r}")


def test_drill_steady_state_fails_closed_without_prometheus(sandbox_only: Sandbox) -> None:
    settings = Settings(kubeconfig=str(sandbox_only.kubeconfig), prometheus_url=_dead_url(),
                        alertmanager_url=sandbox_only.alertmanager_url, http_timeout_seconds=5)
    reset_clients()
    try:
        report = steady_state(NS, "checkout", SteadyState(check_alerts=False), include_fault=False, settings=settings)
    finally:
        reset_clients()
    assert not report.ok, report.summary()
    (p95,) = [p for p in report.probes if p.name == "p95 latency"]
    assert not p95.ok and p95.observed.startswith("unknown:") and "Prometheus" in p95.observed, p95
    # The other probe still answered: the verdict is "not steady" because of the missing evidence alone.
    assert [p.name for p in report.failing()] == ["p95 latency"], report.summary()
