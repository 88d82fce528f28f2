"""Prefect tasks inside a flow: transient API faults are retried and succeed; 404 fails fast, once."""

from __future__ import annotations

import httpx
import pytest
from prefect import flow

from k8s_runbooks.errors import NotFound
from k8s_runbooks.models import WorkloadStatus
from tasks.pods import find_unhealthy_pods, workload_status
from tests.kube.conftest import NS, Cluster


@flow(name="test-kube-retries")
def status_flow(namespace: str, deployment: str) -> WorkloadStatus:
    return workload_status(namespace, deployment)


@flow(name="test-kube-unhealthy")
def unhealthy_flow(namespace: str, deployment: str) -> list:
    return find_unhealthy_pods(namespace, deployment)


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 429, "retry_after": 1}])
def test_transient_api_errors_are_retried(prefect_harness, kube_env, no_faults: Cluster, fault: dict) -> None:
    no_faults.reset_audit()
    no_faults.faults(error_rate=1, count=2, path_regex="/deployments/payments$", **fault)
    status = status_flow(NS, "payments")
    assert status.name == "payments" and status.replicas == 2
    # Both injected failures were consumed (the switch clears itself) and then one request succeeded.
    assert httpx.get(f"{no_faults.api_url}/sandbox/faults", timeout=5).json()["fault"] is None
    assert no_faults.requests("get", "deployments", NS) == 1


def test_missing_deployment_fails_fast_without_retries(prefect_harness, kube_env, no_faults: Cluster) -> None:
    no_faults.reset_audit()
    with pytest.raises(NotFound, match=f"{NS}/no-such-app"):
        unhealthy_flow(NS, "no-such-app")
    assert no_faults.requests("get", "deployments", NS) == 1
