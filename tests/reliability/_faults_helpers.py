"""Helpers of the fault tests: run a runbook in its own process, read the sandbox's request audit and fault
counters, the guard's audit records, and count the task retries the run logged.

A runbook process here is what the CLI or a worker runs: `python -m tests.reliability._faults_run KIND JSON`
prints one JSON line with the final state. Every helper has a timeout; nothing asserts timings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.conftest import REPO, Sandbox

NS = "shop"
# Prefect's task engine logs every failed attempt that will be retried with this phrase.
_RETRY_LINE = re.compile(r"Task run failed with exception: (\w+)\(.*Retry \d+/\d+ will start")


def wait_for(fn: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 20) -> None:
    """Signal the process group `proc` leads (started with start_new_session) and reap it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ------------------------------------------------------------------------------------ sandbox API
class Api:
    """The sandbox API's fault switch and request audit."""

    def __init__(self, url: str) -> None:
        self.url = url

    def faults(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = httpx.post(f"{self.url}/sandbox/faults", json=body, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/sandbox/faults", timeout=10).raise_for_status()

    def injected(self) -> Counter[str]:
        return Counter(httpx.get(f"{self.url}/sandbox/faults/injected", timeout=10).json()["injected"])

    def audit(self) -> Counter[tuple[str, str, str, str]]:
        """(verb, resource, subresource, namespace) -> requests served since the cluster started."""
        data = httpx.get(f"{self.url}/sandbox/audit", timeout=10).json()["requests"]
        out: Counter[tuple[str, str, str, str]] = Counter()
        for r in data:  # summed over the users that made them
            out[(r["verb"], r["resource"], r["subresource"], r["namespace"])] += r["count"]
        return out


def audit_diff(before: Counter[tuple[str, str, str, str]], after: Counter[tuple[str, str, str, str]]) -> Counter[tuple[str, str, str, str]]:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)})


def writes(diff: Counter[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], int]:
    """Writes to workloads; the guard's own bookkeeping (its cooldown and budget Leases) is `guard_writes`."""
    return {k: v for k, v in diff.items() if k[0] not in ("get", "list", "watch") and k[1] != "leases"}


def guard_writes(diff: Counter[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], int]:
    return {k: v for k, v in diff.items() if k[0] not in ("get", "list", "watch") and k[1] == "leases"}


# ------------------------------------------------------------------------------------ the cluster
class Cluster:
    def __init__(self, box: Sandbox) -> None:
        api = k8s_config.new_client_from_config(str(box.kubeconfig))
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)

    def crash_looping(self, deployment: str) -> list[str]:
        pods = self.core.list_namespaced_pod(NS).items
        return sorted(
            p.metadata.name for p in pods
            if p.metadata.name.startswith(f"{deployment}-") and p.metadata.deletion_timestamp is None
            and any(cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff" for cs in (p.status.container_statuses or []))
        )

    def ensure(self, box: Sandbox, deployment: str, replicas: int = 2) -> None:
        """A Deployment (and Service) of the demo image that only the calling module acts on. The session sandbox's
        shop/checkout and shop/payments are other modules' steady targets: crashing and then clearing them leaves a
        fresh rollout whose previous revision crashes, and a later high-latency run diagnosing "bad rollout" rolled
        payments back onto the crash (seen in CI when the fault modules ran before the flow tests on one worker)."""
        from k8s_runbooks.sandbox.demo_workload import ensure_workload, wait_ready

        ensure_workload(box.kubeconfig, NS, {deployment: replicas})
        wait_ready(box.kubeconfig, NS, [deployment], timeout_s=180)

    def delete(self, deployment: str) -> None:
        for fn in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service):
            try:
                fn(deployment, NS, _request_timeout=30, _preload_content=False)  # only whether it went
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise

    def inject_crash(self, box: Sandbox, deployment: str, message: str = "panic: ledger unreachable") -> list[str]:
        from k8s_runbooks.sandbox.demo_workload import set_fault

        set_fault(box.kubeconfig, NS, deployment, "crash", "1", message=message)
        return wait_for(lambda: len(self.crash_looping(deployment)) >= 2 and self.crash_looping(deployment), 150,
                        f"{deployment} pods in CrashLoopBackOff")

    def revision(self, deployment: str) -> str:
        dep = self.apps.read_namespaced_deployment(deployment, NS)
        return (dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "")

    def fault_env(self, deployment: str) -> dict[str, str]:
        dep = self.apps.read_namespaced_deployment(deployment, NS)
        return {e.name: e.value for c in dep.spec.template.spec.containers for e in (c.env or []) if e.name.startswith("FAULT_")}


# ------------------------------------------------------------------------------------ runbook processes
@dataclass
class RunResult:
    state: str
    message: str | None
    flow_run_id: str | None
    postmortem: str | None
    stderr: str
    returncode: int

    @property
    def retries(self) -> Counter[str]:
        """Task retries the run logged, by exception type."""
        return Counter(m.group(1) for m in _RETRY_LINE.finditer(self.stderr))


class Runbooks:
    """Start runbook processes against a sandbox with a private guard state dir (audit, cooldowns)."""

    def __init__(self, box: Sandbox, tmp: Path, **extra_env: str) -> None:
        self.box = box
        self.state_dir = tmp / "state"
        self.reports_dir = tmp / "reports"
        self.env = {
            **box.env,
            "K8S_RUNBOOKS_STATE_DIR": str(self.state_dir),
            "K8S_RUNBOOKS_REPORTS_DIR": str(self.reports_dir),
            "PYTHONPATH": str(REPO),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra_env,
        }

    def start(self, kind: str, **params: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "tests.reliability._faults_run", kind, json.dumps(params)],
                                cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 420) -> RunResult:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"runbook process did not finish in {timeout:.0f}s:\n{err[-4000:]}") from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            return RunResult("NO-RESULT", None, None, None, err, proc.returncode)
        data = json.loads(lines[-1])
        return RunResult(data["state"], data.get("message"), data.get("flow_run_id"), data.get("postmortem"), err,
                         proc.returncode)

    def run(self, kind: str, timeout: float = 420, **params: Any) -> RunResult:
        return self.finish(self.start(kind, **params), timeout)

    def guard_audit(self, flow_run_id: str | None = None) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if flow_run_id is None or r.get("flow_run_id") == flow_run_id]

    def executed(self, flow_run_id: str | None = None) -> list[dict[str, Any]]:
        """Guard records of actions that were carried out (allowed, with an outcome that is not a failure)."""
        return [r for r in self.guard_audit(flow_run_id)
                if r["decision"] == "allowed" and r.get("outcome") and not str(r["outcome"]).startswith("failed")]


def pod_crash_params(deployment: str, **over: Any) -> dict[str, Any]:
    return {"namespace": NS, "deployment": deployment, "stable_seconds": 5, "recovery_timeout_seconds": 150,
            "verify_window_seconds": 30, "verify_timeout_seconds": 150, **over}
