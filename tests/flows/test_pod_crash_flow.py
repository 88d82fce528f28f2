"""The pod-crash flow end to end against the session sandbox (cluster, Prometheus, Prefect server).

The flow runs in its own process (`python -m tests.flows.run_flow`), as the CLI would run it; this test
process plays the on-call engineer and resumes paused runs through the Prefect REST API with the typed
approval input. Tests run in file order and share one crash fault: dry-run, timeout and rejection must
leave it in place; the approved run repairs it; the auto run injects a fresh one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks.sandbox.demo_workload import set_fault, wait_ready
from tests.conftest import REPO, Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NS = "shop"
SECRET = "hunter2-XYZZY"
CRASH_MESSAGE = f"panic: checkout cannot reach the ledger (password={SECRET})"


def wait_for(fn: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Env:
    def __init__(self, box: Sandbox, tmp: Path) -> None:
        self.box = box
        self.state_dir = tmp / "state"
        self.reports_dir = tmp / "reports"
        self.env = {
            **box.env,
            "K8S_RUNBOOKS_STATE_DIR": str(self.state_dir),
            "K8S_RUNBOOKS_REPORTS_DIR": str(self.reports_dir),
            "K8S_RUNBOOKS_COOLDOWN_SECONDS": "0",
            "PYTHONPATH": str(REPO),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        api = k8s_config.new_client_from_config(str(box.kubeconfig))
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        assert box.prefect_api_url
        self.api = httpx.Client(base_url=box.prefect_api_url, timeout=10)

    # -------------------------------------------------------------------- cluster
    def crash_looping(self) -> list[str]:
        pods = self.core.list_namespaced_pod(NS).items
        return sorted(
            p.metadata.name for p in pods
            if p.metadata.name.startswith("checkout-") and p.metadata.deletion_timestamp is None
            and any(cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff" for cs in (p.status.container_statuses or []))
        )

    def inject_crash(self) -> list[str]:
        set_fault(self.box.kubeconfig, NS, "checkout", "crash", "1", message=CRASH_MESSAGE)
        return wait_for(lambda: len(self.crash_looping()) >= 2 and self.crash_looping(), 120, "checkout pods in CrashLoopBackOff")

    def snapshot(self) -> dict[str, Any]:
        """What a remediation would change: deployment specs, ReplicaSets, pod names (not restart counts)."""
        deps = {d.metadata.name: (d.metadata.generation, d.spec.replicas, json.dumps(
            self.apps.api_client.sanitize_for_serialization(d.spec.template), sort_keys=True)) for d in self.apps.list_namespaced_deployment(NS).items}
        rss = sorted((r.metadata.name, r.spec.replicas) for r in self.apps.list_namespaced_replica_set(NS).items)
        pods = sorted(p.metadata.name for p in self.core.list_namespaced_pod(NS).items)
        return {"deployments": deps, "replicasets": rss, "pods": pods}

    # -------------------------------------------------------------------- flow runs
    def start(self, **params: Any) -> subprocess.Popen[str]:
        body = {"namespace": NS, "deployment": "checkout", "stable_seconds": 5, "recovery_timeout_seconds": 150,
                "verify_window_seconds": 30, "verify_timeout_seconds": 150, **params}
        return subprocess.Popen([sys.executable, "-m", "tests.flows.run_flow", json.dumps(body)], cwd=REPO, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def finish(self, proc: subprocess.Popen[str], timeout: float = 400) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"flow process did not finish:\n{err[-4000:]}") from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert proc.returncode == 0 and lines, f"flow process failed ({proc.returncode}):\n{out[-2000:]}\n{err[-6000:]}"
        result = json.loads(lines[-1])
        if result.get("state") != "COMPLETED":  # shown by a failing state assertion: the flow's traceback is here
            result["stderr_tail"] = err[-4000:]
        return result

    def run(self, **params: Any) -> dict[str, Any]:
        return self.finish(self.start(**params))

    def paused_run(self, since: str) -> str:
        def find() -> str | None:
            r = self.api.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}},
                                                                      "start_time": {"after_": since}}, "flows": {"name": {"any_": ["pod-crash"]}}})
            r.raise_for_status()
            runs = r.json()
            return runs[0]["id"] if runs else None
        return wait_for(find, 180, "a paused pod-crash run")

    def resume(self, run_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
        for _ in range(5):  # SQLite "database is locked" answers 503; the UI and raw callers must retry
            r = self.api.post(f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
            if r.status_code != 503:
                break
            time.sleep(1)
        r.raise_for_status()
        return r.json()

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        r = self.api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        r.raise_for_status()
        return r.json()

    def latest(self, run_id: str, key: str) -> dict[str, Any]:
        found = [a for a in self.artifacts(run_id) if a["key"] == key]
        assert found, f"no artifact {key} on run {run_id}"
        return max(found, key=lambda a: a["created"])

    def record(self, run_id: str) -> dict[str, Any]:
        from k8s_runbooks.postmortem.model import RunRecord

        rec = RunRecord.from_markdown(self.latest(run_id, "pod-crash-record")["data"])
        assert rec is not None
        return json.loads(rec.model_dump_json())

    def guard_events(self, run_id: str) -> list[dict[str, Any]]:
        """The guard's audit records of `run_id` as Prefect events (emitted by the hook tasks/ installs)."""
        r = self.api.post("/events/filter", json={"filter": {"event": {"prefix": ["k8s-runbooks.guard."]},
                                                             "related": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 50})
        r.raise_for_status()
        return r.json()["events"]

    def audit(self, run_id: str) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.jsonl"
        if not path.exists():
            return []
        return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if r.get("flow_run_id") == run_id]


@pytest.fixture(scope="module")
def env(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not sandbox.is_sandbox:
        pytest.skip("injects faults: sandbox only")
    e = Env(sandbox, tmp_path_factory.mktemp("pod-crash-flow"))
    yield e
    set_fault(sandbox.kubeconfig, NS, "checkout", "clear")


@pytest.fixture(scope="module")
def crashing(env: Env) -> list[str]:
    return env.inject_crash()


def _assert_no_secret(env: Env, run_id: str, *files: Path) -> None:
    for a in env.artifacts(run_id):
        assert SECRET not in json.dumps(a), f"secret leaked into artifact {a['key']}"
    for f in files:
        assert SECRET not in f.read_text(), f"secret leaked into {f}"


def test_dry_run_plans_and_audits_but_changes_nothing(env: Env, crashing: list[str]) -> None:
    before = env.snapshot()
    result = env.run(approval="dry-run")
    after = env.snapshot()
    assert result["state"] == "COMPLETED", result.get("stderr_tail", result)
    assert before["deployments"] == after["deployments"] and before["replicasets"] == after["replicasets"]
    assert set(before["pods"]) == set(after["pods"])
    rec = env.record(result["flow_run_id"])
    assert rec["outcome"] == "dry-run"
    assert [a["decision"] for a in rec["actions"]] == ["dry-run"] and not rec["actions"][0]["executed"]
    assert any(a["decision"] == "dry-run" for a in env.audit(result["flow_run_id"]))
    plan = env.latest(result["flow_run_id"], "pod-crash-contain-plan")["data"]
    assert "rollout_undo" in plan


def test_timeout_escalates_and_changes_nothing(env: Env, crashing: list[str]) -> None:
    before = env.snapshot()
    result = env.run(approval="required", approval_timeout_seconds=3)
    after = env.snapshot()
    assert result["state"] == "FAILED" and "approval timed out; escalated" in (result["message"] or ""), result
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    rec = env.record(result["flow_run_id"])
    assert rec["outcome"] == "escalated" and rec["actions"] == []
    assert any(e["kind"] == "escalation" for e in rec["timeline"])
    assert any(f["evidence"].get("kind") == "escalation" for f in rec["findings"])
    assert not [a for a in env.audit(result["flow_run_id"]) if a["decision"] == "allowed"]
    status = env.latest(result["flow_run_id"], "pod-crash-communicate-status")["data"]
    assert "escalated" in status


def test_rejection_from_another_process_changes_nothing(env: Env, crashing: list[str]) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    before = env.snapshot()
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        answer = env.resume(run_id, {"approve": False, "action": "rollout_undo", "approver": "bob", "comment": "checking with the team"})
        assert answer["status"] == "ACCEPT", answer
        result = env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "COMPLETED" and "rejected by bob" in result["message"], result
    after = env.snapshot()
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    rec = env.record(run_id)
    assert rec["outcome"] == "rejected" and rec["actions"] == []
    assert any("Rejected by bob" in e["event"] and "checking with the team" in e["detail"] for e in rec["timeline"])


def test_a_resume_without_the_form_never_approves(env: Env, crashing: list[str]) -> None:
    """Prefect's server accepts a resume that carries no input: the runbook treats it as no answer (escalated),
    never as an approval or an anonymous rejection."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    before = env.snapshot()
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        bare = env.api.post(f"/flow_runs/{run_id}/resume", json={})
        assert bare.is_success and bare.json()["status"] == "ACCEPT", bare.text
        result = env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "FAILED" and "resumed without an answer to the approval form" in (result["message"] or ""), result
    after = env.snapshot()
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    rec = env.record(run_id)
    assert rec["outcome"] == "escalated" and rec["actions"] == []
    assert not [a for a in env.audit(run_id) if a["decision"] == "allowed"]


def test_unknown_action_is_rejected_by_the_server_schema(env: Env, crashing: list[str]) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        schema = env.api.get(f"/flow_runs/{run_id}/input/paused-1-schema").json()
        assert set(schema["properties"]) >= {"approve", "action", "approver", "comment"}
        description = env.api.get(f"/flow_runs/{run_id}/input/paused-1-description").json()
        assert "rollout_undo" in description and "Planned actions" in description
        bad = env.resume(run_id, {"approve": True, "action": "delete-the-cluster", "approver": "mallory", "comment": ""})
        assert bad["status"] == "REJECT", bad
        ok = env.resume(run_id, {"approve": False, "action": "rollout_undo", "approver": "carol", "comment": ""})
        assert ok["status"] == "ACCEPT", ok
        env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_cancel_while_waiting_acts_on_nothing(env: Env, crashing: list[str]) -> None:
    """What the receiver does when the run's alert resolves: the paused run is cancelled and ends Cancelled,
    having changed nothing."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    before = env.snapshot()
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        cancel = env.api.post(f"/flow_runs/{run_id}/set_state", json={
            "state": {"type": "CANCELLED", "message": "alert PodCrashLooping resolved while the run waited"}, "force": True})
        assert cancel.json()["status"] == "ACCEPT", cancel.text
        result = env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "CANCELLED", result
    after = env.snapshot()
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    rec = env.record(run_id)
    assert rec["outcome"] == "cancelled" and rec["actions"] == []
    assert any("Cancelled while waiting for approval" in e["event"] for e in rec["timeline"])
    assert not [a for a in env.audit(run_id) if a["decision"] == "allowed"]


def test_a_late_approval_rechecks_and_acts_on_nothing_when_the_problem_is_gone(env: Env, crashing: list[str]) -> None:
    """An approval may come minutes later: by then someone fixed it by hand. The runbook reads the cluster
    again before acting and changes nothing."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        set_fault(env.box.kubeconfig, NS, "checkout", "clear")  # the on-call fixed it meanwhile
        wait_ready(env.box.kubeconfig, NS, ["checkout"], timeout_s=150)
        wait_for(lambda: env.crash_looping() == [], 120, "no crash-looping checkout pod")
        time.sleep(2)
        settled = env.snapshot()
        answer = env.resume(run_id, {"approve": True, "action": "rollout_undo", "approver": "dave", "comment": "late"})
        assert answer["status"] == "ACCEPT", answer
        result = env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "COMPLETED" and "the problem cleared before the approved action ran" in (result["message"] or ""), result
    after = env.snapshot()
    assert settled["deployments"] == after["deployments"], "the approved roll-back must not run on a healthy workload"
    rec = env.record(run_id)
    assert rec["actions"] == [] and any("Re-checked before acting: the problem is gone" in e["event"] for e in rec["timeline"])
    assert not [a for a in env.audit(run_id) if a["decision"] == "allowed"]
    env.inject_crash()  # the next tests act on a crash


def test_a_cause_no_runbook_action_fixes_is_escalated_with_the_exact_change(env: Env) -> None:
    """A quota refusing the pods: restarting or rolling back cannot help. The runbook changes nothing and
    escalates with the change a person must make."""
    env.box.cli("sandbox", "fault", "quota", "--namespace", NS, "--deployment", "payments")
    try:
        wait_for(lambda: any(e.reason == "FailedCreate" and "exceeded quota" in (e.message or "")
                             for e in env.core.list_namespaced_event(NS).items), 120, "a FailedCreate exceeded-quota event")
        before = env.snapshot()
        result = env.run(approval="auto", deployment="payments")
        after = env.snapshot()
    finally:
        env.box.cli("sandbox", "fault", "clear", "--namespace", NS, "--deployment", "payments")
    assert result["state"] == "FAILED" and "quota-cpu-exceeded" in (result["message"] or ""), result
    assert before["deployments"] == after["deployments"]
    rec = env.record(result["flow_run_id"])
    assert rec["actions"] == [] and rec["hypotheses"][0]["object"]["kind"] == "Namespace"
    escalation = next(f for f in rec["findings"] if f["evidence"].get("kind") == "escalation")
    assert "kubectl" in escalation["detail"] and "resourcequota" in escalation["detail"], escalation
    assert not [a for a in env.audit(result["flow_run_id"]) if a["decision"] == "allowed"]


def test_approved_rollback_recovers_and_writes_the_postmortem(env: Env, crashing: list[str]) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    proc = env.start(approval="required", approval_timeout_seconds=300)
    try:
        run_id = env.paused_run(since)
        answer = env.resume(run_id, {"approve": True, "action": "rollout_undo", "approver": "alice", "comment": "bad deploy"})
        assert answer["status"] == "ACCEPT", answer
        result = env.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "COMPLETED", result
    assert env.crash_looping() == []
    rec = env.record(run_id)
    assert rec["outcome"] == "resolved"
    assert [(a["action"]["kind"], a["decision"], a["executed"]) for a in rec["actions"]] == [("rollout_undo", "allowed", True)]
    # Answered through the API (what the UI's Resume dialog sends) on a server without API auth: a claim, not an identity.
    assert any(a["decision"] == "allowed" and a["actor"] == "alice — unverified (Prefect UI)" for a in env.audit(run_id))
    # The same record is a Prefect event about the workload, related to the run (the UI's event feed).
    events = wait_for(lambda: env.guard_events(run_id), 30, "the guard's audit event")
    allowed = [e for e in events if e["event"] == "k8s-runbooks.guard.allowed"]
    assert allowed and allowed[0]["resource"]["prefect.resource.id"] == "k8s-runbooks.workload.shop.deployment.checkout"
    assert allowed[0]["payload"]["actor"].startswith("alice") and allowed[0]["payload"]["action"]["kind"] == "rollout_undo"
    pm = Path(result["postmortem"]).read_text()
    assert "Approved by alice" in pm and "bad deploy" in pm
    timeline = pm[pm.index("## Timeline"):pm.index("## Root Cause")]
    order = ["Incident detected", "Approval requested", "Approved by alice", "Re-checked before acting", "Action allowed", "Recovered", "Verified"]
    positions = [timeline.index(word) for word in order]
    assert positions == sorted(positions), timeline
    # "Recovered" is stamped when the workload settled; the stability window confirming it came after.
    recovered = next(e for e in rec["timeline"] if e["event"].startswith("Recovered:"))
    verify = next(e for e in rec["timeline"] if e["event"] == "Step verify started")
    at = {e["event"]: datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in (recovered, verify)}
    assert "settled" in recovered["detail"] and at[recovered["event"]] < at[verify["event"]], recovered
    _assert_no_secret(env, run_id, Path(result["postmortem"]), Path(result["postmortem"]).with_suffix(".html"))


def test_auto_drill_names_only_checkout_pods_recovers_and_redacts(env: Env) -> None:
    crashing = env.inject_crash()
    result = env.run(approval="auto", drill=True)
    run_id = result["flow_run_id"]
    assert result["state"] == "COMPLETED", result
    table = json.loads(env.latest(run_id, "pod-crash-identify-pods")["data"])
    named = {row["pod"] for row in table if row["unhealthy"]}
    assert named and all(n.startswith("checkout-") for n in named)
    assert set(crashing) <= named
    rec = env.record(run_id)
    logs = [e["content"] for e in rec["evidence"] if e["kind"] == "log"]
    assert any("panic: checkout cannot reach the ledger" in text for text in logs)
    top = rec["hypotheses"][0]
    assert top["cause"] == "crash-after-rollout" and top["object"]["name"] == "checkout", top
    assert any("cannot reach the ledger" in f["text"] for f in top["facts"]), top["facts"]
    assert top["details"]["introduced_by_revision"] and rec["plan"][0]["action"]["kind"] == "rollout_undo"
    assert any(f["evidence"].get("kind") == "crash-after-rollout" for f in rec["findings"])
    assert rec["actions"][0]["action"]["kind"] == "rollout_undo" and rec["actions"][0]["executed"]
    assert env.crash_looping() == []
    pm_path = Path(result["postmortem"])
    pm = pm_path.read_text()
    for section in ("## Timeline", "## Root Cause Analysis", "## Actions Taken", "## Action Items", "## Evidence"):
        assert section in pm
    assert "(drill)" in pm and "canary analysis" in pm and "roll back shop/deployment/checkout" in pm
    progress = env.latest(run_id, "pod-crash-progress")
    assert progress["data"] == 100.0 or float(progress["data"]) == 100.0
    assert env.latest(run_id, "pod-crash-runbook")["data"].startswith("# Pod Crash")
    _assert_no_secret(env, run_id, pm_path, pm_path.with_suffix(".html"))


def test_oom_fault_is_recorded_as_oomkilled_with_its_memory_limit(env: Env) -> None:
    set_fault(env.box.kubeconfig, NS, "checkout", "oom", "64")
    wait_for(lambda: any(
        cs.last_state and cs.last_state.terminated and cs.last_state.terminated.reason == "OOMKilled"
        for p in env.core.list_namespaced_pod(NS).items if p.metadata.name.startswith("checkout-")
        for cs in (p.status.container_statuses or [])
    ), 120, "an OOMKilled checkout container")
    result = env.run(approval="auto", drill=True)
    assert result["state"] == "COMPLETED", result
    rec = env.record(result["flow_run_id"])
    top = rec["hypotheses"][0]
    assert top["cause"] == "oom-killed" and top["details"]["memory_limit"] == "128Mi", top
    assert any("OOMKilled" in f["text"] for f in top["facts"])
    # The OOMs began with the revision that set the fault: rolling back to the revision that fit is the fix.
    assert rec["actions"][0]["action"]["kind"] == "rollout_undo" and rec["actions"][0]["executed"]
    pm = Path(result["postmortem"]).read_text()
    assert "oom-killed" in pm and "Raise the memory limit" in pm and "memory alert" in pm



def _state(env: Env, run_id: str) -> str:
    r = env.api.get(f"/flow_runs/{run_id}")
    r.raise_for_status()
    return str(r.json()["state"]["type"])


def test_contained_by_scaling_to_zero_then_fixed_and_scaled_back_gradually(env: Env) -> None:
    """Stop the bleeding: the approver picks the scale-to-zero alternative (allowed by the run), then the fix in
    a second approval; the run scales back 1-2-3, each step validated, and verifies the crash condition clear."""
    env.inject_crash()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    proc = env.start(approval="required", approval_timeout_seconds=300, allow_all_replicas=True)
    try:
        run_id = env.paused_run(since)
        plan = env.latest(run_id, "pod-crash-contain-plan")["data"]
        assert plan.index("`rollout_undo`") < plan.index("`scale`"), plan  # the fix first, containment after
        assert env.resume(run_id, {"approve": True, "action": "scale", "approver": "alice", "comment": "stop the bleeding"})["status"] == "ACCEPT"
        wait_for(lambda: _state(env, run_id) != "PAUSED", 60, "the run resumed")
        wait_for(lambda: _state(env, run_id) == "PAUSED", 120, "the second approval (the fix)")
        assert env.apps.read_namespaced_deployment("checkout", NS).spec.replicas == 0
        assert env.resume(run_id, {"approve": True, "action": "rollout_undo", "approver": "alice", "comment": "bad deploy"})["status"] == "ACCEPT"
        result = env.finish(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "COMPLETED", result
    assert env.crash_looping() == []
    dep = env.apps.read_namespaced_deployment("checkout", NS)
    assert dep.spec.replicas == 3 and dep.status.ready_replicas == 3
    rec = env.record(run_id)
    assert [(a["action"]["kind"], a["action"].get("replicas"), a["executed"]) for a in rec["actions"]] == [
        ("scale", 0, True), ("rollout_undo", None, True), ("scale", 1, True), ("scale", 2, True), ("scale", 3, True)]
    assert rec["outcome"] == "resolved"
    events = [e["event"] for e in rec["timeline"]]
    assert any(e.startswith("Scaled back to 3 replicas, each step validated") for e in events), events
