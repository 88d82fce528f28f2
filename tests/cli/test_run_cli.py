"""`k8s-runbooks run pod-crash` and `k8s-runbooks postmortem` as a user runs them, against the session sandbox."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from k8s_runbooks.sandbox.demo_workload import api_client, ensure_workload, set_fault, wait_ready
from tests.conftest import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CLI = [sys.executable, "-m", "k8s_runbooks_cli"]
NS = "cli-run"
SUBMIT_TARGET = "web-submit"


def run_cli(box: Sandbox, tmp: Path, *args: str, timeout: float = 300,
            env_over: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**box.env, "K8S_RUNBOOKS_STATE_DIR": str(tmp / "state"), "K8S_RUNBOOKS_REPORTS_DIR": str(tmp / "reports"),
           **(env_over or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_bad_parameters_are_one_clear_line(sandbox: Sandbox, tmp_path: Path) -> None:
    out = run_cli(sandbox, tmp_path, "run", "pod-crash", "--namespace", "Bad_NS", "--deployment", "x")
    assert out.returncode == 1
    assert "invalid parameters" in out.stderr and "namespace" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    out = run_cli(sandbox, tmp_path, "run", "pod-crash", "-n", "shop", "-d", "checkout", "--approval", "yolo")
    assert out.returncode == 1 and "approval" in out.stderr and "Traceback" not in out.stderr


def _snapshot(box: Sandbox, name: str = "web") -> tuple[int | None, str, list[str]]:
    apps = k8s.AppsV1Api(api_client(box.kubeconfig))
    dep = apps.read_namespaced_deployment(name, NS)
    pods = k8s.CoreV1Api(api_client(box.kubeconfig)).list_namespaced_pod(NS, label_selector=f"app={name}")
    return dep.spec.replicas, dep.metadata.annotations.get("deployment.kubernetes.io/revision", ""), sorted(
        p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp)


def test_dry_run_from_the_cli_then_rebuild_the_postmortem(sandbox_only: Sandbox, tmp_path: Path) -> None:
    box = sandbox_only
    ensure_workload(box.kubeconfig, NS, {"web": 2})
    wait_ready(box.kubeconfig, NS, ["web"], timeout_s=120)
    set_fault(box.kubeconfig, NS, "web", "crash", "1", "panic: cli test crash")
    core = k8s.CoreV1Api(api_client(box.kubeconfig))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(NS, label_selector="app=web").items
        if any((cs.restart_count or 0) >= 1 for p in pods for cs in (p.status.container_statuses or [])):
            break
        time.sleep(1)
    before = _snapshot(box)

    out = run_cli(box, tmp_path, "run", "pod-crash", "-n", NS, "-d", "web", "--approval", "dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    run_id = re.search(r"flow run:\s+([0-9a-f-]{36})", out.stdout)
    path = re.search(r"post-mortem:\s+(\S+\.md)", out.stdout)
    assert run_id and path, out.stdout
    assert "/runs/flow-run/" + run_id[1] in out.stdout
    report = Path(path[1]).read_text()
    assert "cli test crash" in report and "dry-run" in report
    # dry-run: the cluster is exactly as it was (same replicas, revision and pods, minus crash restarts)
    assert _snapshot(box)[:2] == before[:2]

    rebuilt = tmp_path / "again.md"
    out = run_cli(box, tmp_path, "postmortem", run_id[1], "-o", str(rebuilt))
    assert out.returncode == 0, out.stdout + out.stderr
    assert rebuilt.exists() and rebuilt.with_suffix(".html").exists()
    assert "## Timeline" in rebuilt.read_text() and "cli test crash" in rebuilt.read_text()

    out = run_cli(box, tmp_path, "postmortem", "not-a-run-id")
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.strip()


@pytest.mark.parametrize("args, field", [
    (["run", "high-latency", "-n", "BAD", "-s", "checkout"], "namespace"),
    (["run", "high-latency", "-n", "shop", "-s", "checkout", "--p95-threshold-ms", "-5"], "p95_threshold_ms"),
    (["run", "incident", "-n", "shop", "-s", "checkout", "--kind", "nope"], "kind"),
    (["run", "incident", "-n", "shop", "-s", "bad service"], "service"),
])
def test_runbook_parameters_are_validated_before_anything_runs(args: list[str], field: str, tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
    env["K8S_RUNBOOKS_SANDBOX_STATE_DIR"] = str(tmp_path)  # no sandbox there: nothing to fall back on
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "invalid parameters" in out.stderr and field in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def _prefect(box: Sandbox, method: str, path: str, **kw: object) -> dict:
    import httpx

    resp = httpx.request(method, f"{box.prefect_api_url}{path}", timeout=10, **kw)  # type: ignore[arg-type]
    resp.raise_for_status()
    return resp.json()


def test_submit_runs_the_deployment_on_the_workers_and_follows_it(sandbox_only: Sandbox, tmp_path: Path) -> None:
    """`--submit`: the run is created from the registered deployment (as an alert creates it), the sandbox's warm
    runner runs it, and the CLI shows its states and log lines as they come, then the outcome."""
    box = sandbox_only
    # Its own Deployment: the dry-run test above leaves `web` crash-looping.
    ensure_workload(box.kubeconfig, NS, {SUBMIT_TARGET: 2})
    wait_ready(box.kubeconfig, NS, [SUBMIT_TARGET], timeout_s=120)
    before = _snapshot(box, SUBMIT_TARGET)
    out = run_cli(box, tmp_path, "run", "pod-crash", "-n", NS, "-d", SUBMIT_TARGET, "--approval", "dry-run", "--submit")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "submitted pod-crash/pod-crash" in out.stdout
    run_id = re.search(r"flow run:\s+([0-9a-f-]{36})", out.stdout)
    assert run_id, out.stdout
    lines = out.stdout.splitlines()
    states = [ln for ln in lines if ln in ("Pending", "Running") or ln.startswith("Completed")]
    assert states[0] in ("Pending", "Running") and states[-1].startswith("Completed"), out.stdout
    # the run's own log lines, streamed while it ran (before its final state), with time and level
    first_log = next((i for i, ln in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d INFO +\S", ln)), None)
    assert first_log is not None, out.stdout
    assert first_log < lines.index(states[-1]), out.stdout
    assert any("Finished in state Completed('" in ln for ln in lines[first_log:lines.index(states[-1])]), out.stdout
    assert "INFO    Finished in state Completed()" not in out.stdout  # per-task engine lines are left out
    assert f"k8s-runbooks postmortem {run_id[1]}" in out.stdout

    run = _prefect(box, "GET", f"/flow_runs/{run_id[1]}")
    dep = _prefect(box, "GET", "/deployments/name/pod-crash/pod-crash")
    assert run["deployment_id"] == dep["id"] and "cli" in run["tags"]
    assert run["parameters"]["params"]["namespace"] == NS and run["parameters"]["params"]["approval"] == "dry-run"
    assert run["parameters"]["params"]["deployment"] == SUBMIT_TARGET
    assert _snapshot(box, SUBMIT_TARGET)[:2] == before[:2]  # dry-run

    out = run_cli(box, tmp_path, "run", "pod-crash", "-n", NS, "-d", SUBMIT_TARGET, "--approval", "dry-run", "--submit",
                  "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    queued = re.search(r"submitted pod-crash/pod-crash: flow run \S+ \(([0-9a-f-]{36})\)", out.stdout)
    assert queued and "Completed" not in out.stdout, out.stdout
    deadline = time.monotonic() + 120
    while _prefect(box, "GET", f"/flow_runs/{queued[1]}")["state"]["type"] != "COMPLETED":
        assert time.monotonic() < deadline, "the --no-wait run never completed"
        time.sleep(1)


def test_submit_errors_say_what_to_do(sandbox_only: Sandbox, tmp_path: Path) -> None:
    box = sandbox_only
    # a server without the deployments (Prometheus answers 404 under /api/deployments/...): fail at once
    out = run_cli(box, tmp_path, "run", "pod-crash", "-n", NS, "-d", "web", "--submit",
                  env_over={"PREFECT_API_URL": f"{box.prometheus_url}/api"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "'pod-crash/pod-crash' is not registered" in out.stderr and "sandbox up" in out.stderr
    # nobody listening: retried with backoff, then one line with the hint
    out = run_cli(box, tmp_path, "run", "pod-crash", "-n", NS, "-d", "web", "--submit",
                  env_over={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "did not answer" in out.stderr and "PREFECT_API_URL" in out.stderr


@pytest.mark.parametrize("setting, says", [
    ("stable_seconds=abc", "stable_seconds"),         # validated like the run form
    ("nope=1", "not a parameter of this runbook"),    # and the hint lists the fields
    ("approval=auto", "use --approval"),              # a field with an option of its own
    ("stable_seconds", "FIELD=VALUE"),
])
def test_set_fields_are_validated_before_anything_runs(setting: str, says: str, tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
    env["K8S_RUNBOOKS_SANDBOX_STATE_DIR"] = str(tmp_path)
    out = subprocess.run([*CLI, "run", "pod-crash", "-n", "shop", "-d", "checkout", "--set", setting, "--submit"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout


COOL_TARGET = "web-cool"


def _audit_lines(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_one_cooldown_for_the_runner_and_clis_in_two_directories(sandbox_only: Sandbox, tmp_path: Path) -> None:
    """The bug a new user hit: two `run pod-crash --approval auto` from two directories, 31 s apart, both acted.
    The cooldown is now a Lease in the workload's namespace: the runner (--submit) rolls a bad release back, the same
    release comes again at once (a flapping pipeline), and a CLI in directory A, then one in directory B, are both
    refused by the cooldown naming the first run, whatever each one's state dir."""
    box = sandbox_only
    try:
        _one_cooldown(box, tmp_path)
    finally:  # crash-looping pods would cost CPU for the rest of the session
        k8s.AppsV1Api(api_client(box.kubeconfig)).delete_namespaced_deployment(COOL_TARGET, NS)


def _crash_and_wait(box: Sandbox, message: str) -> None:
    """A bad rollout (a crashing revision over a healthy one) and the wait until its pods crash."""
    set_fault(box.kubeconfig, NS, COOL_TARGET, "crash", "1", message)
    core = k8s.CoreV1Api(api_client(box.kubeconfig))
    deadline = time.monotonic() + 120
    while not any((cs.restart_count or 0) >= 1 and (p.metadata.labels or {}).get("pod-template-hash")
                  for p in core.list_namespaced_pod(NS, label_selector=f"app={COOL_TARGET}").items
                  if p.spec.containers[0].env and any(e.value == message for e in p.spec.containers[0].env)
                  for cs in (p.status.container_statuses or [])):
        assert time.monotonic() < deadline, "the crash never showed"
        time.sleep(1)


def _one_cooldown(box: Sandbox, tmp_path: Path) -> None:
    ensure_workload(box.kubeconfig, NS, {COOL_TARGET: 2})
    wait_ready(box.kubeconfig, NS, [COOL_TARGET], timeout_s=120)
    _crash_and_wait(box, "panic: flapping release 1")
    args = ("run", "pod-crash", "-n", NS, "-d", COOL_TARGET, "--approval", "auto")
    fast = ("--set", "recovery_timeout_seconds=30", "--set", "verify_timeout_seconds=0", "--set", "stable_seconds=1")

    out = run_cli(box, tmp_path, *args, "--submit", *fast)  # the runner (an alert's path) rolls the release back
    first = re.search(r"flow run:\s+([0-9a-f-]{36})", out.stdout)
    assert first, out.stdout + out.stderr
    assert box.state_dir is not None
    acted = [r for r in _audit_lines(box.state_dir / "runbooks" / "audit.jsonl") if r["flow_run_id"] == first[1]]
    assert acted and acted[0]["decision"] == "allowed" and not (acted[0].get("outcome") or "").startswith("failed"), \
        (acted, out.stdout[-3000:])
    # The same bad release again at once (a flapping deploy pipeline): the runbooks would roll back again.
    _crash_and_wait(box, "panic: flapping release 2")
    after_first = _snapshot(box, COOL_TARGET)[:2]
    env = {k: v for k, v in box.env.items() if k != "K8S_RUNBOOKS_STATE_DIR"}  # each directory's ./.k8s-runbooks
    for where in ("a", "b"):
        cwd = tmp_path / where
        cwd.mkdir()
        out = subprocess.run([*CLI, *args, *fast], capture_output=True, text=True,
                             env={**env, "K8S_RUNBOOKS_REPORTS_DIR": str(cwd / "reports")}, cwd=cwd, timeout=300)
        assert "Traceback" not in out.stderr, out.stderr
        assert "every planned action was refused by the guard" in out.stdout, out.stdout + out.stderr
        report = re.search(r"post-mortem:\s+(\S+\.md)", out.stdout)
        assert report, out.stdout
        text = Path(report[1]).read_text()
        assert "refused: cooldown" in text and first[1] in text, text
        assert all(r["decision"] == "refused" for r in _audit_lines(cwd / ".k8s-runbooks" / "audit.jsonl"))
        assert _snapshot(box, COOL_TARGET)[:2] == after_first  # same replicas and revision: nothing done
