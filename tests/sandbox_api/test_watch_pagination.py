"""Watch streams (kubectl get -w, the Python client's Watch, 410 Gone, bookmarks) and list pagination."""

from __future__ import annotations

import json
import threading
import time

import httpx
from kubernetes import watch


def _wait_for_lines(proc, count: int, timeout: float = 15) -> list[str]:
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if len(lines) >= count:
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return lines


def test_kubectl_get_pods_watch_prints_each_change_once(cluster, core, namespace, bodies) -> None:
    proc = cluster.popen_kubectl("get", "pods", "-n", namespace, "-w", "--output-watch-events")
    try:
        # wait until kubectl's watch is established (it lists first, then watches from the list RV)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            audit = httpx.get(f"{cluster.url}/sandbox/audit", timeout=5).json()["requests"]
            if any(r["verb"] == "watch" and r["namespace"] == namespace for r in audit):
                break
            time.sleep(0.1)
        core.create_namespaced_pod(namespace, bodies.pod("w1"))
        core.patch_namespaced_pod("w1", namespace, {"metadata": {"labels": {"x": "y"}}})
        core.delete_namespaced_pod("w1", namespace, grace_period_seconds=0)
        lines = _wait_for_lines(proc, 4)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert lines[0].split()[:3] == ["EVENT", "NAME", "READY"]
    assert [line.split()[:2] for line in lines[1:]] == [["ADDED", "w1"], ["MODIFIED", "w1"], ["DELETED", "w1"]]


def test_python_watch_sees_added_modified_deleted(core, namespace, bodies) -> None:
    rv = core.list_namespaced_pod(namespace).metadata.resource_version
    core.create_namespaced_pod(namespace, bodies.pod("w2"))
    core.patch_namespaced_pod("w2", namespace, {"metadata": {"labels": {"a": "b"}}})
    core.delete_namespaced_pod("w2", namespace, grace_period_seconds=0)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, namespace, resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "w2"), ("MODIFIED", "w2"), ("DELETED", "w2")]


def test_watch_without_resource_version_sends_current_state(cluster, core, namespace, bodies) -> None:
    core.create_namespaced_pod(namespace, bodies.pod("exists"))
    url = f"{cluster.url}/api/v1/namespaces/{namespace}/pods?watch=1&timeoutSeconds=1"
    with httpx.stream("GET", url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "exists")]


def test_watch_from_expired_resource_version_is_410(cluster, namespace) -> None:
    url = f"{cluster.url}/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion=-5"
    with httpx.stream("GET", url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_watch_bookmarks(cluster, core, namespace) -> None:
    rv = core.list_namespaced_pod(namespace).metadata.resource_version
    url = (f"{cluster.url}/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={rv}"
           "&allowWatchBookmarks=true&timeoutSeconds=5")
    with httpx.stream("GET", url, timeout=15) as resp:
        for line in resp.iter_lines():
            if line:
                event = json.loads(line)
                break
    assert event["type"] == "BOOKMARK" and event["object"]["kind"] == "Pod"
    assert int(event["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_pagination_with_limit_and_continue(cluster, core, namespace, bodies) -> None:
    url = f"{cluster.url}/api/v1/namespaces/{namespace}/pods"
    for i in range(600):
        core.create_namespaced_pod(namespace, bodies.pod(f"p-{i:04d}"))
    first = core.list_namespaced_pod(namespace, limit=500)
    assert len(first.items) == 500 and first.metadata._continue
    assert first.metadata.remaining_item_count == 100
    second = core.list_namespaced_pod(namespace, limit=500, _continue=first.metadata._continue)
    assert len(second.items) == 100 and not second.metadata._continue
    names = [p.metadata.name for p in first.items + second.items]
    assert names == sorted(names) and len(set(names)) == 600
    out = cluster.kubectl("get", "pods", "-n", namespace, "--no-headers", "--chunk-size=250").stdout
    assert len(out.splitlines()) == 600
    bad = httpx.get(f"{url}?limit=10&continue=garbage!", timeout=5)
    assert bad.status_code == 400 and bad.json()["kind"] == "Status"


def test_streaming_list_ends_initial_events_with_bookmark(cluster, core, apps, namespace, bodies) -> None:
    """client-go's WatchList (kubectl rollout status) waits for the initial-events-end bookmark."""
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    url = (f"{cluster.url}/apis/apps/v1/namespaces/{namespace}/deployments?watch=true&sendInitialEvents=true"
           "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dweb"
           "&timeoutSeconds=1")
    with httpx.stream("GET", url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line][:2]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    status = apps.patch_namespaced_deployment_status("web", namespace, {"status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}})
    assert status.status.observed_generation == 1
    out = cluster.kubectl("rollout", "status", "deploy/web", "-n", namespace, "--timeout=10s")
    assert 'deployment "web" successfully rolled out' in out.stdout
