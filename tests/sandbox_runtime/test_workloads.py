"""Deployments, ReplicaSets, pods as processes, scaling, rollouts, deletion and shutdown."""

from __future__ import annotations

import json
import socket
import urllib.request

import psutil

from k8s_runbooks.sandbox import podlogs
from k8s_runbooks.sandbox.controllers import HASH_LABEL, REVISION
from k8s_runbooks.sandbox.runtime import start_runtime
from k8s_runbooks.sandbox.store import Store

from .conftest import NS, deployment, descendants, free_subnet, pods_of, ready_pods, wait_for


def _rs_of(store: Store, app: str) -> list[dict]:
    return [r for r in store.list("replicasets", NS)[0] if r["metadata"]["name"].startswith(f"{app}-")]


def _events(store: Store, pod: str) -> list[dict]:
    return store.list("events", NS, field_selector=f"involvedObject.name={pod}")[0]


def test_deployment_pods_serve_http_and_metrics(store, runtime, tmp_path):
    store.create("deployments", deployment("checkout", 3), namespace=NS)
    pods = wait_for(lambda: len(ready_pods(store, "checkout")) == 3 and ready_pods(store, "checkout"), what="3 ready pods")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3
    # the scheduler spreads a ReplicaSet's pods over the three nodes
    assert {p["spec"]["nodeName"] for p in pods} == {"sandbox-node-1", "sandbox-node-2", "sandbox-node-3"}
    for p in pods:
        ip = p["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:8080/checkout", timeout=2) as r:
            assert r.status == 200
        def scrape(ip: str = ip) -> str:
            with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=2) as r:
                return r.read().decode()
        # the request is observed just after its response is sent, so allow a moment
        wait_for(lambda: 'http_request_duration_seconds_bucket{method="GET",path="/checkout",code="200",le="0.3"}'
                 in scrape(), timeout=5, what="checkout histogram series")
        assert p["status"]["hostIP"] == next(
            a["address"] for a in store.get("nodes", None, p["spec"]["nodeName"])["status"]["addresses"]
            if a["type"] == "InternalIP")
        cs = p["status"]["containerStatuses"][0]
        assert cs["state"]["running"]["startedAt"] and cs["containerID"].startswith("sandbox://")
        pid = int(cs["containerID"].removeprefix("sandbox://"))
        assert psutil.pid_exists(pid)
        assert (tmp_path / "pids" / "pods" / f"{NS}_{p['metadata']['name']}_app.pid").read_text().strip() == str(pid)
        ref = p["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "ReplicaSet" and ref["controller"] is True
        log = podlogs.log_files(tmp_path, NS, p["metadata"]["name"], p["metadata"]["uid"], "app")
        wait_for(lambda log=log: any("postgres://" in text for _, _, text in podlogs.read_lines(log[0])),
                 timeout=5, what="startup log line")
        reasons = {e["reason"] for e in _events(store, p["metadata"]["name"])}
        assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons
    d = wait_for(lambda: (d := store.get("deployments", NS, "checkout"))["status"].get("availableReplicas") == 3 and d,
                 what="deployment status caught up")
    st = d["status"]
    assert (st["replicas"], st["updatedReplicas"], st["availableReplicas"], st["observedGeneration"]) == (3, 3, 3, 1)
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Progressing"] == "NewReplicaSetAvailable"
    store.create("services", {"metadata": {"name": "checkout", "labels": {"sandbox.k8s-runbooks.io/traffic": "true"}},
                              "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]}},
                 namespace=NS)
    ep = wait_for(lambda: (e := store.try_get("endpoints", NS, "checkout")) and e.get("subsets") and e, what="endpoints")
    assert {a["ip"] for a in ep["subsets"][0]["addresses"]} == ips
    assert ep["subsets"][0]["ports"][0]["port"] == 8080

    def served_requests() -> int:
        total = 0
        for ip in ips:
            with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=2) as r:
                total += sum(int(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                             if line.startswith("http_requests_total{"))
        return total
    # 6 requests were ours; synthetic traffic to the labelled service adds the rest.
    wait_for(lambda: served_requests() > 20, what="synthetic traffic reaching the pods")
    rs = _rs_of(store, "checkout")[0]
    assert rs["metadata"]["labels"][HASH_LABEL] == rs["metadata"]["name"].rsplit("-", 1)[1]
    assert rs["metadata"]["annotations"][REVISION] == "1"


def test_delete_scale_and_rollout(store, runtime):
    store.create("deployments", deployment("payments", 2), namespace=NS)
    first = wait_for(lambda: len(ready_pods(store, "payments")) == 2 and ready_pods(store, "payments"), what="2 ready")
    victim = first[0]
    pid = int(victim["status"]["containerStatuses"][0]["containerID"].removeprefix("sandbox://"))
    store.delete("pods", NS, victim["metadata"]["name"])
    wait_for(lambda: store.try_get("pods", NS, victim["metadata"]["name"]) is None, what="graceful delete finished")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert any(e["reason"] == "Killing" for e in _events(store, victim["metadata"]["name"]))
    names = {p["metadata"]["name"] for p in wait_for(
        lambda: len(ready_pods(store, "payments")) == 2 and ready_pods(store, "payments"), what="replacement")}
    assert victim["metadata"]["name"] not in names

    store.mutate("deployments", NS, "payments", lambda d: d["spec"].__setitem__("replicas", 4))
    wait_for(lambda: len(ready_pods(store, "payments")) == 4, what="scaled up to 4")
    store.mutate("deployments", NS, "payments", lambda d: d["spec"].__setitem__("replicas", 1))
    wait_for(lambda: len(pods_of(store, "payments")) == 1, what="scaled down to 1")

    old_rs = _rs_of(store, "payments")[0]

    def restart(d: dict) -> None:
        d["spec"]["replicas"] = 2
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2026-01-01T00:00:00Z"
    store.mutate("deployments", NS, "payments", restart)

    def rolled() -> bool:
        d = store.get("deployments", NS, "payments")
        st = d["status"]
        return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == 2
                and st.get("replicas") == 2 and st.get("availableReplicas") == 2)
    wait_for(rolled, what="rollout complete")
    rss = {r["metadata"]["name"]: r for r in _rs_of(store, "payments")}
    assert len(rss) == 2
    new_rs = next(r for n, r in rss.items() if n != old_rs["metadata"]["name"])
    assert new_rs["metadata"]["annotations"][REVISION] == "2"
    assert rss[old_rs["metadata"]["name"]]["spec"]["replicas"] == 0
    assert {p["metadata"]["labels"][HASH_LABEL] for p in pods_of(store, "payments")} == \
        {new_rs["metadata"]["labels"][HASH_LABEL]}

    # `kubectl rollout undo`: the deployment gets the old template back → old RS reused as revision 3.
    def undo(d: dict) -> None:
        tmpl = json.loads(json.dumps(old_rs["spec"]["template"]))
        del tmpl["metadata"]["labels"][HASH_LABEL]
        d["spec"]["template"] = tmpl
    store.mutate("deployments", NS, "payments", undo)
    wait_for(rolled, what="undo rollout complete")
    wait_for(lambda: store.get("replicasets", NS, old_rs["metadata"]["name"])["metadata"]["annotations"][REVISION] == "3",
             what="old RS re-labelled as revision 3")
    assert store.get("replicasets", NS, new_rs["metadata"]["name"])["spec"]["replicas"] == 0

    store.delete("deployments", NS, "payments")
    wait_for(lambda: not pods_of(store, "payments") and not _rs_of(store, "payments"), what="garbage collection")


def test_stop_leaves_no_process(store, tmp_path):
    rt = start_runtime(store, None, state_dir=tmp_path, api_url="http://127.0.0.1:1",
                       pod_subnet=free_subnet(), resync_seconds=0.5)
    try:
        store.create("deployments", deployment("pause", 20, image="sandbox/pause:1", probe=False), namespace=NS)
        pods = wait_for(lambda: len(ready_pods(store, "pause")) == 20 and ready_pods(store, "pause"), what="20 pause pods")
        pids = {int(p["status"]["containerStatuses"][0]["containerID"].removeprefix("sandbox://")) for p in pods}
        assert pids <= descendants()
        p = pods[0]
        log = podlogs.log_files(tmp_path, NS, p["metadata"]["name"], p["metadata"]["uid"], "app")
        wait_for(lambda: any("pause" in t for _, _, t in podlogs.read_lines(log[0])), what="pause log line")
    finally:
        rt.stop()
    assert not (pids & descendants())
    assert not list((tmp_path / "pids" / "pods").glob("*.pid"))


def test_pod_ips_taken_by_another_sandbox_are_skipped(store, tmp_path):
    """Two sandboxes on one machine with the same pod subnet (two `sandbox up`s, parallel test sessions): the
    addresses the other one's pods listen on are not handed out again, so no pod here crash-loops on its bind."""
    subnet = free_subnet()
    squatters = []
    for lo in (2, 3):  # the first addresses the allocator hands out: what the other sandbox's first pods hold
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((f"{subnet}.0.{lo}", 8080))
        sock.listen()
        squatters.append(sock)
    rt = start_runtime(store, None, state_dir=tmp_path, api_url="http://127.0.0.1:1", pod_subnet=subnet,
                       crashloop_backoff_cap=2.0, resync_seconds=0.5)
    try:
        store.create("deployments", deployment("checkout", 2), namespace=NS)
        pods = wait_for(lambda: len(ready_pods(store, "checkout")) == 2 and ready_pods(store, "checkout"),
                        what="2 ready pods")
        assert {p["status"]["podIP"] for p in pods}.isdisjoint({f"{subnet}.0.2", f"{subnet}.0.3"})
        assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods)
    finally:
        rt.stop()
        for sock in squatters:
            sock.close()


def test_a_crash_after_one_second_rolls_out_to_every_replica_of_the_demo_workload(store, runtime):
    """`sandbox fault crash 1` is a bad rollout that passes its readiness probe and then crashes, as the drills and
    fault tests need it: every replica of the bad revision gets created (each pod seen ready before it crashes lets
    the rollout go on). With the demo's probe every 1 s a pod crashing at 1 s was often never seen ready, and under
    load the rollout stuck at its first surge pod (CI: fault fixtures waited 150 s for 2 crash-looping pods)."""
    from k8s_runbooks.sandbox.demo_workload import deployment_body

    from k8s_runbooks.sandbox.kubelet import PROBE_PERIOD_ANNOTATION

    body = deployment_body("shop", 3, namespace=NS)
    assert PROBE_PERIOD_ANNOTATION in body["spec"]["template"]["metadata"]["annotations"]
    store.create("deployments", body, namespace=NS)
    wait_for(lambda: len(ready_pods(store, "shop")) == 3, timeout=30, what="3 ready pods")
    store.mutate("deployments", NS, "shop", lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__(
        "env", [{"name": "FAULT_CRASH_AFTER_S", "value": "1"}]))

    def bad_revision_everywhere() -> bool:
        new = [r for r in _rs_of(store, "shop") if r["metadata"]["annotations"].get(REVISION) == "2"]
        return bool(new) and new[0]["spec"]["replicas"] == 3
    wait_for(bad_revision_everywhere, timeout=60, what="the bad revision scaled to all 3 replicas")
