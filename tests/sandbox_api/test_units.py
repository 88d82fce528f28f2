"""Pure functions: kubectl's pod STATUS/RESTARTS logic, durations, and the patch algorithms."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.patches import json_patch, merge_patch, strategic_merge_patch
from k8s_runbooks.sandbox.tables import human_duration, pod_status_cells


def _ago(seconds: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(state: dict, restarts: int = 0, last: dict | None = None, ready: bool = False, **meta) -> dict:
    return {"metadata": {"name": "p", **meta}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": ready, "restartCount": restarts, "state": state, "lastState": last or {}}]}}


@pytest.mark.parametrize(("pod", "expected"), [
    (_pod({"running": {}}, ready=True), ("1/1", "Running", "0")),
    (_pod({"waiting": {"reason": "CrashLoopBackOff"}}, 3, {"terminated": {"exitCode": 1, "finishedAt": _ago(3 * 86400)}}),
     ("0/1", "CrashLoopBackOff", "3 (3d ago)")),
    (_pod({"terminated": {"reason": "OOMKilled", "exitCode": 137}}), ("0/1", "OOMKilled", "0")),
    (_pod({"terminated": {"exitCode": 2}}), ("0/1", "ExitCode:2", "0")),
    (_pod({"running": {}}, ready=True, deletionTimestamp=_ago(1)), ("1/1", "Terminating", "0")),
])
def test_pod_status_cells_match_kubectl(pod: dict, expected: tuple[str, str, str]) -> None:
    assert pod_status_cells(pod) == expected


def test_pending_pod_without_statuses() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
           "status": {"phase": "Pending"}}
    assert pod_status_cells(pod) == ("0/2", "Pending", "0")


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"),
                                               (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (3 * 86400, "3d")])
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_merge_patch_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_json_patch_rfc6902() -> None:
    doc = {"a": {"b": [1, 2]}}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3}, {"op": "remove", "path": "/a/b/0"},
                           {"op": "copy", "from": "/a/b", "path": "/c"}, {"op": "test", "path": "/c/0", "value": 2},
                           {"op": "move", "from": "/c", "path": "/d"}, {"op": "replace", "path": "/a/b/1", "value": 9}])
    assert out == {"a": {"b": [2, 9]}, "d": [2, 3]} and doc == {"a": {"b": [1, 2]}}
    with pytest.raises(ApiError) as err:
        json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 5}])
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        json_patch(doc, [{"op": "jump", "path": "/a"}])
    assert err.value.code == 400


def test_strategic_merge_patch_as_kubectl_sends_it() -> None:
    target = {"spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}],
                                       "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                                      {"name": "side", "image": "s:1"}],
                       "finalizers": ["x"]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                      "containers": [{"name": "app", "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                                      "env": [{"name": "B", "value": "2"}],
                                      "ports": [{"containerPort": 80, "name": "http"}]},
                                     {"name": "side", "$patch": "delete"}],
                      "finalizers": ["y"]}}
    out = strategic_merge_patch(target, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    app = out["spec"]["containers"][0]
    assert app["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert app["image"] == "a:1" and out["spec"]["finalizers"] == ["x", "y"]
    retained = strategic_merge_patch({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                                     {"$retainKeys": ["type"], "type": "Recreate"})
    assert retained == {"type": "Recreate"}


def test_store_list_page_copies_only_the_page_and_counts_every_match() -> None:
    from k8s_runbooks.sandbox.store import Store

    store = Store()
    try:
        store.create("namespaces", {"metadata": {"name": "ns"}})
        for i in range(25):
            labels = {"app": "a" if i % 5 else "b"}
            store.create("pods", {"metadata": {"name": f"p-{i:02d}", "namespace": "ns", "labels": labels}, "spec": {"containers": [{"name": "c", "image": "sandbox/pause:1"}]}})
        page, rv, total = store.list_page("pods", "ns", "app=a", offset=5, limit=10)
        everything, rv_all = store.list("pods", "ns", "app=a")
        assert total == 20 and rv == rv_all
        assert [o["metadata"]["name"] for o in page] == [o["metadata"]["name"] for o in everything][5:15]
        tail, _, _ = store.list_page("pods", "ns", "app=a", offset=15, limit=0)
        assert [o["metadata"]["name"] for o in tail] == [o["metadata"]["name"] for o in everything][15:]
        page[0]["metadata"]["labels"]["app"] = "changed"  # a copy: the stored object is untouched
        again, _, _ = store.list_page("pods", "ns", "app=a", offset=5, limit=1)
        assert again[0]["metadata"]["labels"] == {"app": "a"}
    finally:
        store.close()
