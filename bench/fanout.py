"""Fan-out: identify the unhealthy pods of a 100 / 1,000 / 5,000-pod workload and read their logs.

    .venv/bin/python bench/fanout.py [--quick] [--out FILE] [--sizes 100 1000 5000] [--rounds 3]

Targets at 1,000 pods: ≤ 5 s and ≤ 400 MB worker RSS. For each size a fresh sandbox cluster runs a
Deployment `fleet` of `sandbox/pause:1` pods (one `sh`→`sleep` process each). A rollout to a crashing
template (image `sandbox/exec`, a command that logs a fatal line and exits 1) with `maxSurge: 50,
maxUnavailable: 0` gets stuck exactly as in a real cluster: N-50 healthy old pods, 50 new pods in
CrashLoopBackOff — N pods in the namespace, 50 unhealthy.

A separate worker process (`--worker`, as a runbook worker would be) then does what the pod-crash
runbook's identify step does, through the Prefect-free core our tasks wrap: `find_unhealthy_pods`
(Deployment, ReplicaSets, pods) and the previous-container log of every unhealthy pod
(`previous_logs`). It reports wall and CPU times, its peak RSS (`VmHWM`) and its RSS before the
work (interpreter + client), so the growth with N is visible. Not `ru_maxrss`: Linux carries it across
`execve`, so a worker started by this (large) bench process would report the bench's own high-water mark. Building the official client (importing
its API classes) is a fixed cost per process, reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _harness as h

UNHEALTHY = 50
NAMESPACE = "fleet"
DEPLOYMENT = "fleet"
CRASH_COMMAND = ["sh", "-c", "echo 'fleet: worker starting'; echo 'fatal: cannot open /data/shard: permission denied'; exit 1"]


# ----------------------------------------------------------------------------------------- worker
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    """This process's own RSS high-water mark (VmHWM belongs to the address space, which execve replaces)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def worker(namespace: str, deployment: str) -> dict[str, Any]:
    """Runs in its own process: client start-up, then identification + logs, with wall and CPU times
    (CPU seconds stay comparable when other work on the machine stretches wall times) and peak RSS."""
    import psutil

    w0, c0 = time.perf_counter(), _cpu()
    from k8s_runbooks.kube import client, logs, pods

    client.get_kube()  # importing the official client's API classes (~280 pydantic models) is paid once per process
    w1, c1 = time.perf_counter(), _cpu()
    rss_before = psutil.Process().memory_info().rss
    unhealthy = pods.find_unhealthy_pods(namespace, deployment)
    w2, c2 = time.perf_counter(), _cpu()
    excerpts = logs.previous_logs([(p.name, c.name) for p in unhealthy for c in p.containers
                                   if c.last_terminated_reason or c.restart_count], namespace, tail_lines=200)
    w3, c3 = time.perf_counter(), _cpu()
    fatal = sum(1 for e in excerpts if any("fatal:" in line for line in e.lines))
    return {
        "unhealthy": len(unhealthy), "logs": len(excerpts), "logs_with_fatal_line": fatal,
        "client_startup_s": round(w1 - w0, 3), "client_startup_cpu_s": round(c1 - c0, 3),
        "identify_s": round(w2 - w1, 4), "logs_s": round(w3 - w2, 4), "total_s": round(w3 - w1, 4),
        "identify_cpu_s": round(c2 - c1, 4), "logs_cpu_s": round(c3 - c2, 4), "total_cpu_s": round(c3 - c1, 4),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_rss_mb": round(_peak_rss_bytes() / 2**20, 1),
    }


def run_worker(kubeconfig: Path) -> dict[str, Any]:
    # The sandbox API server copies and serializes the whole pod list in Python on the same 2 cores: under
    # load a 1,000-pod page of a 5,000-pod namespace took longer than the default 10 s read timeout.
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "K8S_RUNBOOKS_KUBECONFIG": str(kubeconfig),
           "K8S_RUNBOOKS_KUBE_TIMEOUT_SECONDS": os.environ.get("K8S_RUNBOOKS_KUBE_TIMEOUT_SECONDS", "60")}
    out = subprocess.run([sys.executable, __file__, "--worker"], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------- the fleet
def _apis(kubeconfig: Path) -> tuple[Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    return client.CoreV1Api(api), client.AppsV1Api(api)


def _deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": UNHEALTHY, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "sandbox/pause:1"}]}},
        },
    }


def _wait(what: str, check: Any, timeout_s: float) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout_s:
        ok, last = check()
        if ok:
            return time.monotonic() - started
        time.sleep(1.0)
    raise RuntimeError(f"{what} not reached after {timeout_s:.0f} s (last: {last})")


def build_fleet(kubeconfig: Path, size: int) -> dict[str, float]:
    core, apps = _apis(kubeconfig)
    core.create_namespace({"metadata": {"name": NAMESPACE}}, _request_timeout=30)
    t0 = time.monotonic()
    apps.create_namespaced_deployment(NAMESPACE, _deployment(size - UNHEALTHY), _request_timeout=30)

    def all_ready() -> tuple[bool, Any]:
        st = apps.read_namespaced_deployment_status(DEPLOYMENT, NAMESPACE, _request_timeout=30).status
        return (st.ready_replicas or 0) >= size - UNHEALTHY, st.ready_replicas

    ready_s = _wait("healthy fleet ready", all_ready, 120 + size * 0.2)
    # Never Ready (nothing listens on the probe's port): a crashing pod is never briefly "available", so
    # the stuck rollout keeps exactly N-50 old pods and 50 new ones.
    probe = {"httpGet": {"path": "/", "port": 9}, "periodSeconds": 5}
    crash = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "sandbox/exec:1", "command": CRASH_COMMAND, "readinessProbe": probe}]}}}}
    apps.patch_namespaced_deployment(DEPLOYMENT, NAMESPACE, crash, _request_timeout=30)

    def crashed() -> tuple[bool, Any]:
        pods = core.list_namespaced_pod(NAMESPACE, _request_timeout=60).items
        restarted = sum(1 for p in pods for c in (p.status.container_statuses or []) if c.restart_count >= 1)
        return len(pods) == size and restarted >= UNHEALTHY, (len(pods), restarted)

    crash_s = _wait("50 crashed pods", crashed, 120 + size * 0.05)
    return {"fleet_ready_s": round(ready_s, 1), "crashing_after_s": round(crash_s, 1), "setup_s": round(time.monotonic() - t0, 1)}


def measure(size: int, rounds: int) -> dict[str, Any]:
    with h.state_dir(f"fanout-{size}") as directory, h.cluster(directory) as cluster:
        print(f"[{size} pods] cluster up at {cluster.url}; building the fleet", flush=True)
        setup = build_fleet(cluster.kubeconfig, size)
        print(f"[{size} pods] {size - UNHEALTHY} ready in {setup['fleet_ready_s']} s, 50 crashing after "
              f"{setup['crashing_after_s']} s more; load avg {os.getloadavg()[0]:.1f}", flush=True)
        runs, errors = [], []
        for n in range(rounds):
            try:
                r = run_worker(cluster.kubeconfig)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc)[-600:])
                print(f"[{size} pods] round {n + 1} failed: {str(exc)[-300:]}", flush=True)
                continue
            runs.append(r)
            print(f"[{size} pods] round {n + 1}: {r['unhealthy']} unhealthy, {r['logs']} logs "
                  f"({r['logs_with_fatal_line']} with the fatal line): identify {r['identify_s']:.2f} s + logs "
                  f"{r['logs_s']:.2f} s = {r['total_s']:.2f} s (CPU {r['total_cpu_s']:.2f} s); client start-up "
                  f"{r['client_startup_s']:.1f} s; RSS {r['rss_before_mb']} MB before, peak {r['peak_rss_mb']} MB; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    if not runs:
        return {"pods": size, "setup": setup, "errors": errors, "correct": False}
    return {
        "pods": size, "unhealthy_expected": UNHEALTHY, "setup": setup, "rounds": runs, "errors": errors,
        "total_s_median": round(statistics.median(r["total_s"] for r in runs), 3),
        "total_s_max": max(r["total_s"] for r in runs),
        "identify_s_median": round(statistics.median(r["identify_s"] for r in runs), 3),
        "logs_s_median": round(statistics.median(r["logs_s"] for r in runs), 3),
        "total_cpu_s_median": round(statistics.median(r["total_cpu_s"] for r in runs), 3),
        "client_startup_s_median": round(statistics.median(r["client_startup_s"] for r in runs), 3),
        "client_startup_cpu_s_median": round(statistics.median(r["client_startup_cpu_s"] for r in runs), 3),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
        "rss_before_mb": runs[0]["rss_before_mb"],
        "correct": all(r["unhealthy"] == UNHEALTHY and r["logs_with_fatal_line"] == UNHEALTHY for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(NAMESPACE, DEPLOYMENT)))
        return 0
    sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 5000])
    rounds = args.rounds or (2 if args.quick else 3)
    results = []
    for size in sizes:
        try:
            results.append(measure(size, rounds))
        except RuntimeError as exc:  # e.g. the fleet never came up: keep the other sizes' figures
            print(f"[{size} pods] not measured: {exc}", flush=True)
            results.append({"pods": size, "errors": [str(exc)[-600:]], "correct": False})
    at_1000 = next((r for r in results if r["pods"] == 1000), None)
    data = {"sizes": results, "target": {"pods": 1000, "seconds": 5.0, "rss_mb": 400}}
    if at_1000 and "total_s_max" in at_1000:
        data["meets_target"] = at_1000["total_s_max"] <= 5.0 and at_1000["peak_rss_mb_max"] <= 400 and at_1000["correct"]
    h.write_out(args.out, data)
    print("fan-out (identify + logs of 50 unhealthy pods, separate worker process):")
    for r in results:
        if "total_s_median" not in r:
            print(f"  {r['pods']:>5} pods: not measured ({r['errors'][-1][-200:]})")
            continue
        print(f"  {r['pods']:>5} pods: median {r['total_s_median']:.2f} s (identify {r['identify_s_median']:.2f} s, "
              f"logs {r['logs_s_median']:.2f} s; CPU {r['total_cpu_s_median']:.2f} s), max {r['total_s_max']:.2f} s; "
              f"peak RSS {r['peak_rss_mb_max']} MB ({r['rss_before_mb']} MB before the work); client start-up "
              f"{r['client_startup_s_median']:.1f} s (CPU {r['client_startup_cpu_s_median']:.1f} s); correct: {r['correct']}")
    if "meets_target" in data:
        print(f"  target at 1,000 pods (≤ 5 s, ≤ 400 MB): {'met' if data['meets_target'] else 'MISSED'}")
    print(f"  load avg {h.machine()['load_avg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
