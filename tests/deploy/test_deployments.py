"""The deployments `sandbox up` registers: typed parameter schemas, runbook descriptions, tags; and one
remediation per workload at a time through the global concurrency slot."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client as k8s
from prefect.client.orchestration import SyncPrefectClient
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.common import read_record
from flows.concurrency import slot_name
from flows.params import PodCrashParams
from k8s_runbooks_prefect import deploy
from k8s_runbooks.sandbox import demo_workload
from k8s_runbooks.sandbox.demo_workload import api_client
from tests.conftest import Sandbox
from tests.deploy.conftest import wait_final

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_every_available_runbook_is_a_deployment_with_its_model_schema(client: SyncPrefectClient) -> None:
    specs = deploy.available_specs()
    assert "pod-crash" in [s.name for s in specs]
    for spec in specs:
        dep = client.read_deployment_by_name(f"{spec.flow_name}/{spec.name}")
        assert set(spec.tags) <= set(dep.tags)
        assert dep.enforce_parameter_schema
    dep = client.read_deployment_by_name("pod-crash/pod-crash")
    schema = dep.parameter_openapi_schema
    assert schema["required"] == ["params"]
    model = schema["definitions"]["PodCrashParams"]
    assert set(model["properties"]) == set(PodCrashParams.model_fields)
    assert model["properties"]["approval"]["enum"] == ["required", "auto", "dry-run"]
    assert set(model["required"]) == {"namespace", "deployment"}
    # The description is the Markdown runbook's title, objective and steps.
    assert dep.description.startswith("**Pod Crash in a Kubernetes Deployment**")
    assert "1. Identify" in dep.description and "runbooks/pod-crash.md" in dep.description


def test_a_run_with_invalid_parameters_is_refused_by_the_server(client: SyncPrefectClient) -> None:
    dep = client.read_deployment_by_name("pod-crash/pod-crash")
    with pytest.raises(Exception, match="(?i)validation|422|pattern"):
        client.create_flow_run_from_deployment(dep.id, parameters={"params": {"namespace": "Bad NS; drop", "deployment": "x"}})


def test_two_runs_on_one_workload_never_overlap(prefect_sandbox: Sandbox, client: SyncPrefectClient) -> None:
    """Two dry runs for the same Deployment, created together: the second's runbook starts only after the
    first's finished (timestamps from their run records)."""
    demo_workload.ensure_workload(prefect_sandbox.kubeconfig, "drill-slot", {"web": 1})
    params = {"params": {"namespace": "drill-slot", "deployment": "web", "approval": "dry-run",
                         "verify_timeout_seconds": 0, "notes": "slot test"}}
    ids = []

    def create() -> None:
        with temporary_settings(updates={PREFECT_API_URL: prefect_sandbox.prefect_api_url}):
            ids.append(run_deployment("pod-crash/pod-crash", parameters=params, timeout=0).id)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 2
    spans = []
    for run_id in ids:
        run = wait_final(client, run_id)
        assert run.state is not None and run.state.is_completed(), run.state
        with temporary_settings(updates={PREFECT_API_URL: prefect_sandbox.prefect_api_url}):
            record = read_record(str(run_id))
        assert record is not None
        started = [e.at for e in record.timeline if e.event.startswith("Step identify started")]
        finished = [e.at for e in record.timeline if e.event.startswith("Runbook finished")]
        assert started and finished
        spans.append((min(started), max(finished)))
    first, second = sorted(spans)
    assert first[1] <= second[0], f"remediation sections overlap: {spans}"
    # The slot is a Lease in the workload's namespace: taken by both runs in turn, free now.
    ns, lease_name = slot_name("drill-slot", "web").split("/")
    lease = k8s.CoordinationV1Api(api_client(prefect_sandbox.kubeconfig)).read_namespaced_lease(lease_name, ns)
    assert lease.spec.holder_identity is None and lease.spec.lease_transitions >= 2, lease.spec
