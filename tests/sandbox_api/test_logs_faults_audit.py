"""Pod logs from the kubelet's log files, the fault switch and the request audit."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes.client.rest import ApiException

from k8s_runbooks.sandbox import podlogs


@pytest.fixture()
def crashed_pod(cluster, core, namespace, bodies) -> str:
    """A pod whose container restarted once: log 0 is the previous run, log 1 the current one."""
    pod = core.create_namespaced_pod(namespace, bodies.pod("crashy"))
    for restart, lines in ((0, ["starting", "boom: out of cheese"]), (1, ["starting", "line 2", "line 3"])):
        writer = podlogs.LogWriter(podlogs.container_log_path(cluster.state_dir, namespace, "crashy",
                                                              pod.metadata.uid, "main", restart))
        for line in lines:
            writer.write("stdout", line)
        writer.close()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.patch_namespaced_pod_status("crashy", namespace, {"status": {"phase": "Running", "containerStatuses": [{
        "name": "main", "image": "sandbox/pause:1", "imageID": "", "ready": True, "restartCount": 1, "started": True,
        "state": {"running": {"startedAt": now}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}},
    }]}})
    return "crashy"


def test_logs_current_previous_tail_timestamps(cluster, core, namespace, crashed_pod) -> None:
    assert cluster.kubectl("logs", crashed_pod, "-n", namespace).stdout == "starting\nline 2\nline 3\n"
    assert cluster.kubectl("logs", crashed_pod, "-n", namespace, "--previous").stdout == "starting\nboom: out of cheese\n"
    assert cluster.kubectl("logs", crashed_pod, "-n", namespace, "--tail=1").stdout == "line 3\n"
    stamped = cluster.kubectl("logs", crashed_pod, "-n", namespace, "--timestamps", "--tail=2").stdout.splitlines()
    assert len(stamped) == 2
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line [23]$", line) for line in stamped), stamped
    text = core.read_namespaced_pod_log(crashed_pod, namespace, container="main", previous=True, tail_lines=1)
    assert text == "boom: out of cheese\n"
    assert core.read_namespaced_pod_log(crashed_pod, namespace, limit_bytes=5) == "start"


def test_pod_table_shows_restarts_ago(cluster, namespace, crashed_pod) -> None:
    line = cluster.kubectl("get", "pod", crashed_pod, "-n", namespace, "--no-headers").stdout.split()
    assert line[:4] == [crashed_pod, "1/1", "Running", "1"] and line[4].startswith("(") and line[5] == "ago)"


def test_previous_logs_missing_is_400(cluster, core, namespace, bodies) -> None:
    core.create_namespaced_pod(namespace, bodies.pod("fresh"))
    core.patch_namespaced_pod_status("fresh", namespace, {"status": {"containerStatuses": [{
        "name": "main", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("fresh", namespace, previous=True)
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == 'previous terminated container "main" in pod "fresh" not found'
    out = cluster.kubectl("logs", "fresh", "-n", namespace, "--previous", check=False)
    assert 'previous terminated container "main" in pod "fresh" not found' in out.stderr


def test_fault_switch_count_errors_then_clears(cluster, core, namespace) -> None:
    resp = httpx.post(f"{cluster.url}/sandbox/faults", timeout=5,
                      json={"error_rate": 1, "status": 503, "count": 2, "path_regex": f"/namespaces/{namespace}/pods"})
    assert resp.status_code == 200
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod(namespace)
        assert err.value.status == 503
    assert core.list_namespaced_pod(namespace).items == []
    assert httpx.get(f"{cluster.url}/sandbox/faults", timeout=5).json() == {"fault": None}


def test_fault_switch_429_with_retry_after_is_retried_by_kubectl(cluster, namespace) -> None:
    httpx.post(f"{cluster.url}/sandbox/faults", timeout=5, json={
        "error_rate": 1, "status": 429, "retry_after": 1, "count": 1, "methods": ["GET"],
        "path_regex": f"/namespaces/{namespace}/pods"})
    out = cluster.kubectl("get", "pods", "-n", namespace)
    assert "No resources found" in out.stderr
    httpx.post(f"{cluster.url}/sandbox/faults", timeout=5, json={
        "error_rate": 1, "status": 500, "count": 1, "path_regex": f"/namespaces/{namespace}/pods"})
    out = cluster.kubectl("get", "pods", "-n", namespace, check=False)
    assert out.returncode == 1 and "InternalError" in out.stderr


def test_fault_switch_drop_and_bad_config(cluster, namespace) -> None:
    httpx.post(f"{cluster.url}/sandbox/faults", timeout=5, json={
        "drop_rate": 1, "count": 1, "path_regex": f"/namespaces/{namespace}/pods"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{cluster.url}/api/v1/namespaces/{namespace}/pods", timeout=5)
    assert httpx.get(f"{cluster.url}/healthz", timeout=5).text == "ok"
    bad = httpx.post(f"{cluster.url}/sandbox/faults", json={"error_rate": 3}, timeout=5)
    assert bad.status_code == 400 and bad.json()["kind"] == "Status"
    httpx.delete(f"{cluster.url}/sandbox/faults", timeout=5)


def test_audit_counts_requests_in_rbac_verbs(cluster, core, namespace, bodies) -> None:
    httpx.delete(f"{cluster.url}/sandbox/audit", timeout=5)
    core.create_namespaced_pod(namespace, bodies.pod("a"))
    core.read_namespaced_pod("a", namespace)
    core.list_namespaced_pod(namespace)
    core.patch_namespaced_pod("a", namespace, {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_pod("a", namespace, grace_period_seconds=0)
    requests = httpx.get(f"{cluster.url}/sandbox/audit", timeout=5).json()["requests"]
    got = {(r["verb"], r["resource"], r["subresource"]): r["count"] for r in requests if r["namespace"] == namespace}
    assert got == {("create", "pods", ""): 1, ("get", "pods", ""): 1, ("list", "pods", ""): 1,
                   ("patch", "pods", ""): 1, ("delete", "pods", ""): 1}
