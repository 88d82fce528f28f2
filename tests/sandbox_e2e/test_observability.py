"""Against the session sandbox: Prometheus really scrapes the pods, faults move the metrics, alerts fire.

Fault tests use their own namespaces and deployments (same image and shape as the demo) so the shared
`shop` workload stays healthy for the other tests of the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
from kubernetes import client

from k8s_runbooks.sandbox import demo_workload
from k8s_runbooks.sandbox.supervisor import wait_for_alert
from tests.conftest import Sandbox

pytestmark = pytest.mark.slow
T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout_s: float = 120.0, every_s: float = 1.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def promql(box: Sandbox, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{box.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
    resp.raise_for_status()
    return resp.json()["data"]["result"]


def p95(box: Sandbox, namespace: str, service: str) -> float | None:
    result = promql(box, "histogram_quantile(0.95, sum by (namespace, service, le) ("
                         f'rate(http_request_duration_seconds_bucket{{namespace="{namespace}",service="{service}"}}[30s])))')
    values = [float(r["value"][1]) for r in result if r["value"][1] not in ("NaN", "+Inf")]
    return values[0] if values else None


def own_deployment(box: Sandbox, namespace: str, name: str) -> None:
    demo_workload.ensure_workload(box.kubeconfig, namespace, {name: 1})
    demo_workload.wait_ready(box.kubeconfig, namespace, [name], timeout_s=120)


def test_prometheus_scrapes_the_shop_pods_p95(sandbox_only: Sandbox) -> None:
    for service in ("checkout", "payments"):
        value = eventually(f"a p95 for shop/{service}", lambda: p95(sandbox_only, "shop", service) is not None)
        assert value
    targets = httpx.get(f"{sandbox_only.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    shop_pods = [t for t in targets if t["labels"].get("namespace") == "shop" and t["labels"].get("job") == "kubernetes-pods"]
    assert len(shop_pods) >= 5, [t["labels"] for t in shop_pods]  # 3 checkout + 2 payments replicas


def test_latency_fault_raises_p95_above_threshold(sandbox_only: Sandbox) -> None:
    own_deployment(sandbox_only, "e2e-latency", "slow")
    baseline = eventually("a baseline p95", lambda: p95(sandbox_only, "e2e-latency", "slow"))
    assert baseline < 0.3
    sandbox_only.cli("sandbox", "fault", "latency", "--namespace", "e2e-latency", "--deployment", "slow",
                     "--value", "800")
    value = eventually("p95 above 0.3s", lambda: (v := p95(sandbox_only, "e2e-latency", "slow")) and v > 0.3 and v,
                       timeout_s=150)
    assert value > 0.3
    alerts = wait_for_alert(sandbox_only.alertmanager_url, "HighLatency",
                            {"namespace": "e2e-latency", "service": "slow"}, timeout_s=120)
    assert alerts[0]["labels"]["severity"] == "warning"
    assert alerts[0]["annotations"]["runbook"] == "high-latency"


def shop_restarts(box: Sandbox) -> dict[str, int]:
    """Restart count per live shop pod (pods being deleted are another module's roll-out finishing)."""
    core = client.CoreV1Api(demo_workload.api_client(box.kubeconfig))
    pods = core.list_namespaced_pod("shop", _request_timeout=10).items
    return {p.metadata.name: sum(cs.restart_count for cs in (p.status.container_statuses or []))
            for p in pods if p.metadata.deletion_timestamp is None}


def test_crash_fault_fires_pod_crash_looping_with_deployment_labels(sandbox_only: Sandbox) -> None:
    own_deployment(sandbox_only, "e2e-crash", "crashy")
    shop_before = shop_restarts(sandbox_only)
    injected_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sandbox_only.cli("sandbox", "fault", "crash", "--namespace", "e2e-crash", "--deployment", "crashy", "--value", "1")
    alerts = wait_for_alert(sandbox_only.alertmanager_url, "PodCrashLooping",
                            {"namespace": "e2e-crash", "deployment": "crashy"}, timeout_s=150)
    labels = alerts[0]["labels"]
    assert "pod" not in labels and len(alerts) == 1  # one alert for the workload, however many pods crash
    assert labels["severity"] == "critical"
    assert alerts[0]["annotations"]["runbook"] == "pod-crash"
    # The shop workload is untouched: its pods restarted no more than before the fault, and no shop alert began
    # after it. (An alert that began earlier is another module's crash-and-clear of shop/checkout, which the
    # rule's 1 m restart window still sees for a minute after the clear.)
    shop_after = shop_restarts(sandbox_only)
    assert shop_before and {pod: shop_after.get(pod, n) for pod, n in shop_before.items()} == shop_before, (shop_before, shop_after)
    assert all(n == 0 for pod, n in shop_after.items() if pod not in shop_before), shop_after
    shop = [a for a in wait_for_alert_absent(sandbox_only, {"namespace": "shop"}) if a["startsAt"][:19] >= injected_at]
    assert shop == [], "the demo workload must not crash-loop because of another namespace's fault"


def wait_for_alert_absent(box: Sandbox, labels: dict[str, str]) -> list[dict[str, Any]]:
    from k8s_runbooks.sandbox.supervisor import firing_alerts

    return firing_alerts(box.alertmanager_url, "PodCrashLooping", labels)


def test_oom_fault_is_oomkilled_137_and_clear_removes_the_fault(sandbox_only: Sandbox) -> None:
    own_deployment(sandbox_only, "e2e-oom", "leaky")
    sandbox_only.cli("sandbox", "fault", "oom", "--namespace", "e2e-oom", "--deployment", "leaky", "--value", "64")
    core = client.CoreV1Api(demo_workload.api_client(sandbox_only.kubeconfig))

    def oom_killed() -> dict[str, Any] | None:
        for pod in core.list_namespaced_pod("e2e-oom", label_selector="app=leaky", _request_timeout=10).items:
            for cs in (pod.status.container_statuses or []):
                term = cs.last_state.terminated if cs.last_state else None
                if term and term.reason == "OOMKilled":
                    return {"pod": pod.metadata.name, "exit_code": term.exit_code}
        return None

    killed = eventually("an OOMKilled container", oom_killed, timeout_s=120)
    assert killed["exit_code"] == 137

    sandbox_only.cli("sandbox", "fault", "clear", "--namespace", "e2e-oom", "--deployment", "leaky")
    apps = client.AppsV1Api(demo_workload.api_client(sandbox_only.kubeconfig))
    dep = apps.read_namespaced_deployment("leaky", "e2e-oom", _request_timeout=10)
    env = dep.spec.template.spec.containers[0].env or []
    assert not [e.name for e in env if e.name.startswith("FAULT_")]
    demo_workload.wait_ready(sandbox_only.kubeconfig, "e2e-oom", ["leaky"], timeout_s=120)
