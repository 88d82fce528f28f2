"""Faults: crash loops, OOM kills, CPU throttling, unknown images."""

from __future__ import annotations

import time

import psutil

from k8s_runbooks.sandbox import podlogs

from .conftest import NS, deployment, pods_of, wait_for


def _status(store, app: str) -> dict | None:
    pods = [p for p in pods_of(store, app) if not p["metadata"].get("deletionTimestamp")]
    return pods[0] if pods and (pods[0].get("status") or {}).get("containerStatuses") else None


def _reasons(store, pod: dict) -> dict[str, int]:
    evs = store.list("events", NS, field_selector=f"involvedObject.uid={pod['metadata']['uid']}")[0]
    out: dict[str, int] = {}
    for e in evs:
        out[e["reason"]] = out.get(e["reason"], 0) + e["count"]
    return out


def test_crash_fault_gives_crashloopbackoff(store, runtime, tmp_path):
    store.create("deployments", deployment("crashy", 1, env={"FAULT_CRASH_AFTER_S": "0.3"}), namespace=NS)

    def looping():
        p = _status(store, "crashy")
        if not p:
            return None
        cs = p["status"]["containerStatuses"][0]
        waiting = cs["state"].get("waiting") or {}
        return p if cs["restartCount"] >= 2 and waiting.get("reason") == "CrashLoopBackOff" else None
    pod = wait_for(looping, timeout=30, what="CrashLoopBackOff with restarts")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["lastState"]["terminated"]["finishedAt"]
    assert "back-off" in cs["state"]["waiting"]["message"] and "container=app" in cs["state"]["waiting"]["message"]
    assert pod["status"]["phase"] == "Running" and cs["ready"] is False
    files = podlogs.log_files(tmp_path, NS, pod["metadata"]["name"], pod["metadata"]["uid"], "app")
    assert len(files) >= 2
    previous = [t for _, stream, t in podlogs.read_lines(files[-2]) if stream == "stderr"]
    assert any("panic: simulated crash" in t for t in previous)
    reasons = _reasons(store, pod)
    assert reasons.get("BackOff", 0) >= 1 and reasons.get("Started", 0) >= 2
    first = cs["restartCount"]
    wait_for(lambda: (p := _status(store, "crashy")) and p["status"]["containerStatuses"][0]["restartCount"] > first,
             timeout=20, what="restartCount growing")


def test_memory_leak_is_oom_killed(store, runtime):
    store.create("deployments", deployment("leaky", 1, env={"FAULT_LEAK_MB_PER_S": "200"},
                                           resources={"limits": {"memory": "64Mi"}}), namespace=NS)

    def oomed():
        p = _status(store, "leaky")
        term = p and (p["status"]["containerStatuses"][0].get("lastState") or {}).get("terminated")
        return p if term else None
    pod = wait_for(oomed, timeout=20, what="OOMKilled")
    term = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 137)
    evs = store.list("events", NS, field_selector=f"involvedObject.uid={pod['metadata']['uid']},reason=OOMKilling")[0]
    assert evs and evs[0]["type"] == "Warning" and evs[0]["source"]["component"] == "kubelet"


def test_cpu_limit_throttles(store, runtime):
    store.create("deployments", deployment("burner", 1, env={"FAULT_CPU_BURN": "1"}, probe=False,
                                           resources={"limits": {"cpu": "100m"}}), namespace=NS)
    pod = wait_for(lambda: (p := _status(store, "burner")) and "running" in p["status"]["containerStatuses"][0]["state"]
                   and p, what="burner running")
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("sandbox://"))
    proc = psutil.Process(pid)
    time.sleep(0.5)  # let the interpreter start before measuring
    c0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    time.sleep(3)
    used = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
    assert used < 0.4, f"a 100m container used {used:.2f} cores"
    stats = next(s for s in runtime.kubelet.container_stats() if s["pod"] == pod["metadata"]["name"])
    assert stats["periods"] > 10 and stats["throttled"] > stats["periods"] // 2


def test_unknown_image_never_starts(store, runtime):
    store.create("deployments", deployment("ghost", 1, image="sandbox/nope:1"), namespace=NS)

    def backoff():
        p = _status(store, "ghost")
        waiting = p and p["status"]["containerStatuses"][0]["state"].get("waiting")
        return p if waiting and waiting["reason"] == "ImagePullBackOff" else None
    pod = wait_for(backoff, timeout=15, what="ImagePullBackOff")
    cs = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Pending" and "containerID" not in cs and cs["restartCount"] == 0
    assert {"Failed", "BackOff"} <= set(_reasons(store, pod))
