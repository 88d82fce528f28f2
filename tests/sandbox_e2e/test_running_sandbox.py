"""`status` and `env` describe the running session sandbox; Prefect answers; the demo workload is there."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client

from k8s_runbooks.sandbox import demo_workload
from tests.conftest import Sandbox

pytestmark = pytest.mark.slow


def test_status_lists_every_component_up_with_its_url(sandbox_only: Sandbox) -> None:
    out = sandbox_only.cli("sandbox", "status").stdout
    urls = {"cluster": sandbox_only.api_url, "prometheus": sandbox_only.prometheus_url,
            "alertmanager": sandbox_only.alertmanager_url, "pushgateway": sandbox_only.pushgateway_url,
            "prefect": sandbox_only.prefect_api_url}
    for name, url in urls.items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert " up " in line and str(url) in line, line


def test_env_points_at_this_sandbox(sandbox_only: Sandbox) -> None:
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in sandbox_only.cli("sandbox", "env").stdout.splitlines())
    assert exports["KUBECONFIG"] == str(sandbox_only.kubeconfig.resolve())
    assert exports["PREFECT_API_URL"] == sandbox_only.prefect_api_url
    assert exports["K8S_RUNBOOKS_PROMETHEUS_URL"] == sandbox_only.prometheus_url
    assert exports["K8S_RUNBOOKS_ALERTMANAGER_URL"] == sandbox_only.alertmanager_url
    assert exports["K8S_RUNBOOKS_PUSHGATEWAY_URL"] == sandbox_only.pushgateway_url
    assert httpx.get(f"{sandbox_only.prefect_api_url}/health", timeout=10).status_code == 200


def test_demo_workload_matches_the_contract(sandbox_only: Sandbox) -> None:
    api = demo_workload.api_client(sandbox_only.kubeconfig)
    ns = client.CoreV1Api(api).read_namespace("shop", _request_timeout=10)
    assert ns.metadata.labels["k8s-runbooks.io/drills"] == "allowed"
    apps = client.AppsV1Api(api)
    for name, replicas in demo_workload.DEPLOYMENTS.items():
        dep = apps.read_namespaced_deployment(name, "shop", _request_timeout=10)
        assert dep.spec.replicas == replicas and (dep.status.ready_replicas or 0) == replicas
        tmpl = dep.spec.template
        assert tmpl.metadata.annotations["prometheus.io/scrape"] == "true"
        assert tmpl.spec.containers[0].resources.limits == {"cpu": "500m", "memory": "128Mi"}
    svc = client.CoreV1Api(api).read_namespaced_service("checkout", "shop", _request_timeout=10)
    assert svc.metadata.labels["sandbox.k8s-runbooks.io/traffic"] == "true"


def test_up_again_on_the_running_sandbox_changes_nothing(sandbox_only: Sandbox) -> None:
    assert sandbox_only.state_dir is not None
    before = {p.name: p.read_text() for p in (sandbox_only.state_dir / "pids").glob("*.pid")}
    out = sandbox_only.cli("sandbox", "up").stdout
    assert "started" not in out
    after = {p.name: p.read_text() for p in (sandbox_only.state_dir / "pids").glob("*.pid")}
    assert after == before


def test_fault_on_a_missing_deployment_is_one_clear_line(sandbox_only: Sandbox) -> None:
    result = sandbox_only.cli("sandbox", "fault", "crash", "--namespace", "shop", "--deployment", "nope", check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not found" in lines[0] and "shop/nope" in lines[0], result.stderr
