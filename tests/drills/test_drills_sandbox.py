"""Drills end to end against the session sandbox. Each drill has its own Deployment (namespaces `drill-*` are
routed by the sandbox's alert receiver; `dr-*` are not, so direct-path drills are not answered twice).
Drills run in their own process, as the CLI runs them; this process plays the canceller.

The drills of the selected tests start together (fixture `launched`) once their targets are steady, and each
test collects its own drill's result: a drill mostly waits (scrapes, alert windows, rollouts), so running them
side by side on separate Deployments makes the module as long as its longest drill, not the sum of them."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks.drills.model import SteadyState
from k8s_runbooks.drills.probes import steady_state
from k8s_runbooks.guard import Guard
from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef
from k8s_runbooks.sandbox.demo_workload import active_faults, ensure_workload, wait_ready
from k8s_runbooks.settings import Settings
from tests.conftest import REPO, Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SUFFIX = "".join(random.choices(string.ascii_lowercase, k=5))
NS_ALERT = f"drill-{SUFFIX}"  # routed: the alert path answers
NS = f"dr-{SUFFIX}"  # not routed: direct path only
NOLABEL = f"nolabel-{SUFFIX}"
DIRECT = {"stable_seconds": 3, "recovery_timeout_seconds": 90, "verify_window_seconds": 30, "verify_timeout_seconds": 90}


@dataclass(frozen=True)
class Drill:
    namespace: str
    deployment: str
    scenario: str = "pod-crash"
    params: dict[str, Any] = field(default_factory=dict)
    steady_first: bool = True  # wait for the target's steady state before starting (False: the test wants it refused/aborted)
    sigint_ignored: bool = False  # start it as `cmd &` in a script would: SIGINT ignored


DRILLS: dict[str, Drill] = {
    "latency": Drill(NS_ALERT, "slow", "latency", {"response": "alert", "fault": {"kind": "latency", "value": "800"},
                                                   "detect_timeout_seconds": 150, "recover_timeout_seconds": 240,
                                                   "runbook_wait_after_recovery_seconds": 180}),
    "alert-crash": Drill(NS_ALERT, "web", params={"response": "alert", "fault": {"kind": "crash", "value": "1", "message": "panic: drill"}}),
    "failed": Drill(NS, "api", params={"response": "direct", "approval": "required", "approval_timeout_seconds": 5,
                                       "runbook_overrides": DIRECT, "fault": {"kind": "crash", "value": "1"}}),
    # SIGINT ignored: the cancellation must not depend on it (found in a CI run started in the background).
    "cancel": Drill(NS, "cancel", params={"response": "direct", "approval": "required", "approval_timeout_seconds": 600,
                                          "runbook_overrides": DIRECT}, sigint_ignored=True),
    "trend": Drill(NS, "trend", params={"fault": {"kind": "pod-kill", "pods": 1}, "response": "none"}),
    "unlabelled": Drill(NOLABEL, "web", params={"response": "direct"}, steady_first=False),
    "protected": Drill("kube-system", "web", params={"response": "direct"}, steady_first=False),
    "not-steady": Drill(NS, "flaky", params={"response": "direct"}, steady_first=False),
}
USES = {  # test -> the drills it collects
    "test_unlabelled_and_protected_namespaces_are_refused": ["unlabelled", "protected"],
    "test_not_steady_target_gets_no_fault": ["not-steady"],
    "test_cancelling_a_drill_mid_way_rolls_back": ["cancel"],
    "test_trend_reads_past_drills_of_the_deployment": ["trend"],
    "test_failed_response_still_rolls_back_and_reports": ["failed"],
    "test_pod_crash_drill_through_the_alert_path": ["alert-crash"],
    "test_latency_drill_through_the_alert_path": ["latency"],
}


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
        self.box, self.state_dir, self.reports_dir = box, tmp / "state", tmp / "reports"
        self.env = {**box.env, "K8S_RUNBOOKS_STATE_DIR": str(self.state_dir), "K8S_RUNBOOKS_REPORTS_DIR": str(self.reports_dir),
                    "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.settings = Settings(kubeconfig=box.kubeconfig, prometheus_url=box.prometheus_url,
                                 alertmanager_url=box.alertmanager_url, state_dir=self.state_dir)
        api = k8s_config.new_client_from_config(str(box.kubeconfig))
        self.core, self.apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        assert box.prefect_api_url
        self.api = httpx.Client(base_url=box.prefect_api_url, timeout=10)

    def steady(self, ns: str, name: str) -> bool:
        return steady_state(ns, name, SteadyState(), settings=self.settings).ok

    def start(self, ns: str, name: str, scenario: str = "pod-crash", sigint_ignored: bool = False,
              **params: Any) -> subprocess.Popen[str]:
        """The drill in its own process (own session, so the teardown can stop what it left behind)."""
        body = {"namespace": ns, "deployment": name, "detect_timeout_seconds": 90, "recover_timeout_seconds": 150,
                "post_verify_timeout_seconds": 90, "runbook_wait_after_recovery_seconds": 0, **params}
        env = {**self.env, "RUN_DRILL_SIGINT": "ignore"} if sigint_ignored else self.env
        return subprocess.Popen([sys.executable, "-m", "tests.drills.run_drill", scenario, json.dumps(body)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def finish(self, proc: subprocess.Popen[str], timeout: float = 420) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # run_drill dumps every thread's stack to stderr (faulthandler)
            time.sleep(2)
            proc.kill()
            out, err = proc.communicate()
            stacks = err.find("Thread 0x")
            raise AssertionError(f"drill process did not finish:\n{err[max(0, stacks - 3000):][-12000:]}") from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert proc.returncode == 0 and lines, f"drill process failed ({proc.returncode}):\n{out[-2000:]}\n{err[-6000:]}"
        result = json.loads(lines[-1])
        assert result["scorecard"], f"no scorecard: {result}\n{err[-3000:]}"
        return result

    def launch(self, drill: Drill) -> subprocess.Popen[str]:
        return self.start(drill.namespace, drill.deployment, drill.scenario, drill.sigint_ignored, **drill.params)

    def audit(self, run_id: str) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r.get("flow_run_id") == run_id]

    def faults(self, ns: str, name: str) -> dict[str, str]:
        return active_faults(self.box.kubeconfig, ns, name)

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        r = self.api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def env(sandbox_only: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(sandbox_only, tmp_path_factory.mktemp("drills"))
    kc = sandbox_only.kubeconfig
    ensure_workload(kc, NS_ALERT, {"web": 2, "slow": 2})
    ensure_workload(kc, NS, {"api": 2, "cancel": 2, "trend": 2, "solo": 1})
    ensure_workload(kc, NS, {"flaky": 2}, env={"FAULT_CRASH_AFTER_S": "1"})  # never steady
    ensure_workload(kc, NOLABEL, {"web": 1})
    e.core.patch_namespace(NOLABEL, {"metadata": {"labels": {"k8s-runbooks.io/drills": None}}})
    wait_ready(kc, NS_ALERT, ["web", "slow"], timeout_s=180)
    wait_ready(kc, NS, ["api", "cancel", "trend", "solo"], timeout_s=180)
    yield e
    e.api.close()


@pytest.fixture(scope="module")
def launched(env: Env, request: pytest.FixtureRequest) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The drills of the selected tests of this module, started together once their targets are steady."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    keys = [k for k in DRILLS if any(k in USES.get(name, []) for name in selected)]
    pending = {(d.namespace, d.deployment) for k in keys if (d := DRILLS[k]).steady_first}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            pending = {t for t in pending if not env.steady(*t)}
            for k in keys:  # start each drill as soon as its target is steady
                d = DRILLS[k]
                if k not in procs and (not d.steady_first or (d.namespace, d.deployment) not in pending):
                    procs[k] = env.launch(d)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not pending, f"targets never steady: {sorted(pending)}"
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # a failed test left its drill running: stop it (its own session)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_unlabelled_and_protected_namespaces_are_refused(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    for key in ("unlabelled", "protected"):
        result = env.finish(launched[key])
        card = result["scorecard"]
        assert card["outcome"] == "refused", card
        assert ("not labelled" if key == "unlabelled" else "protected") in card["outcome_detail"]
        assert card["injected_at"] is None and not any(a["decision"] == "allowed" for a in env.audit(result["flow_run_id"]))
    assert env.faults(NOLABEL, "web") == {}


def test_guard_never_kills_every_replica_or_a_foreign_pod(env: Env) -> None:
    """A drill's pod kill and a runbook's delete_pods share one check: live pods of the workload only, never
    all replicas at once unless the action says so. Refusals touch nothing and are audited."""
    guard = Guard(env.settings)
    (only,) = [p.metadata.name for p in env.core.list_namespaced_pod(NS, label_selector="app=solo").items
               if p.metadata.deletion_timestamp is None]
    target = WorkloadRef(namespace=NS, name="solo")
    for kind in (ActionKind.inject_fault, ActionKind.delete_pods):
        for pods, why in (([only], "would delete all 1 pods"), (["someone-else"], "are not live pods")):
            result = guard.execute(Action(kind=kind, target=target, pods=pods, reason="test"), "auto", "tester", "run-guard")
            assert result.decision is Decision.refused and not result.executed and why in result.detail, (kind, result.detail)
    assert [p.metadata.name for p in env.core.list_namespaced_pod(NS, label_selector="app=solo").items] == [only]
    assert [a["decision"] for a in env.audit("run-guard")] == ["refused"] * 4


def test_not_steady_target_gets_no_fault(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    result = env.finish(launched["not-steady"])
    card = result["scorecard"]
    # The crash-looping target is unsteady by its ready replicas or by its crash-loop alert: which of the two the
    # probes catch depends on the instant (its pods crash 1 s after start; the restart back-off decides if one is up).
    detail = card["outcome_detail"]
    assert card["outcome"] == "aborted" and ("ready replicas" in detail or "PodCrashLooping" in detail), detail
    assert card["injected_at"] is None
    assert not [a for a in env.audit(result["flow_run_id"]) if a["action"]["kind"] == "inject_fault"]
    assert env.faults(NS, "flaky") == {"FAULT_CRASH_AFTER_S": "1"}  # only the fault it was created with


def test_cancelling_a_drill_mid_way_rolls_back(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    proc = launched["cancel"]
    wait_for(lambda: env.faults(NS, "cancel"), 180, "the fault to be injected")

    def runs(flow: str, state: str) -> list[dict[str, Any]]:
        r = env.api.post("/flow_runs/filter", json={"flows": {"name": {"any_": [flow]}},
                                                    "flow_runs": {"state": {"type": {"any_": [state]}}}})
        r.raise_for_status()
        return [x for x in r.json() if (x["parameters"].get("params") or {}).get("deployment") == "cancel"
                and x["parameters"]["params"].get("namespace") == NS]

    # mid-way: the fault is in and the responding runbook waits for its approval
    wait_for(lambda: runs("pod-crash", "PAUSED"), 180, "the runbook to wait for its approval")
    (run,) = runs("drill-pod-crash", "RUNNING")
    r = env.api.post(f"/flow_runs/{run['id']}/set_state", json={"state": {"type": "CANCELLING"}, "force": True})
    assert r.status_code in (200, 201), r.text
    result = env.finish(proc, timeout=240)
    card = result["scorecard"]
    assert card["outcome"] == "cancelled" and card["rollback_ok"] is True, card
    assert env.faults(NS, "cancel") == {}
    state = env.api.get(f"/flow_runs/{result['flow_run_id']}").json()["state"]["type"]
    assert state == "CANCELLED"


def test_trend_reads_past_drills_of_the_deployment(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    runs = [env.finish(launched["trend"])]
    wait_for(lambda: env.steady(NS, "trend"), 120, "steady state of trend")
    runs.append(env.finish(env.launch(DRILLS["trend"])))
    assert all(r["scorecard"]["outcome"] == "passed" for r in runs), [r["scorecard"] for r in runs]
    last = runs[-1]["flow_run_id"]
    table = [a for a in env.artifacts(last) if a["key"] == "drill-trend-table"]
    rows = json.loads(table[-1]["data"])
    assert {r["run"] for r in rows} >= {r["flow_run_id"] for r in runs}
    assert all(r["recover_s"] is not None for r in rows if r["run"] in {x["flow_run_id"] for x in runs})
    assert (env.reports_dir / last / "drill-trend.png").read_bytes()[:4] == b"\x89PNG"


def test_failed_response_still_rolls_back_and_reports(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    result = env.finish(launched["failed"])
    card = result["scorecard"]
    assert card["outcome"] == "failed" and result["state"] == "FAILED"
    assert "Failed" in (card["runbook_state"] or ""), card
    assert any("timed out" in r for r in card["responders"]), card["responders"]
    phases = {p["name"]: p for p in card["phases"]}
    assert phases["approval"]["seconds"] is not None and phases["recover"]["met"] is False
    assert card["rollback_ok"] is True and any("remove fault: allowed" in r for r in card["rollback"]), card["rollback"]
    assert env.faults(NS, "api") == {}


def test_pod_crash_drill_through_the_alert_path(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    r = httpx.get(env.box.env.get("K8S_RUNBOOKS_RECEIVER_URL", "http://127.0.0.1:" + env.box.env["K8S_RUNBOOKS_SANDBOX_RECEIVER_PORT"]) + "/healthz", timeout=5)
    assert r.status_code == 200, "the sandbox starts the alert receiver"
    result = env.finish(launched["alert-crash"])
    card = result["scorecard"]
    phases = {p["name"]: p for p in card["phases"]}
    print("pod-crash drill phases:", {k: v["seconds"] for k, v in phases.items()}, card["outcome"], card["outcome_detail"])
    assert card["response_path"] == "alert"
    assert phases["detect"]["seconds"] is not None and phases["respond"]["seconds"] is not None, card
    assert phases["recover"]["seconds"] is not None, card
    assert card["runbook_run_id"] and card["outcome"] in ("passed", "failed"), card
    assert card["rollback_ok"] is True, card
    assert env.faults(NS_ALERT, "web") == {}
    assert env.steady(NS_ALERT, "web") or not [p for p in card["steady_after"]["probes"] if p["name"] != "firing alerts" and not p["ok"]]
    keys = {a["key"] for a in env.artifacts(result["flow_run_id"])}
    assert {"drill-scorecard", "drill-pod-crash-record", "drill-pod-crash-phases"} <= keys
    metrics = httpx.get(env.box.pushgateway_url + "/metrics", timeout=10).text
    assert f'k8s_runbooks_drill_phase_seconds{{deployment="web",instance="",job="k8s_runbooks_drill",namespace="{NS_ALERT}",phase="recover"' in metrics
    assert any(f'namespace="{NS_ALERT}"' in line for line in metrics.splitlines() if line.startswith("k8s_runbooks_drill_success"))
    pm = env.reports_dir / result["flow_run_id"] / "postmortem.md"
    assert pm.exists() and "(drill)" in pm.read_text()


def test_latency_drill_through_the_alert_path(env: Env, launched: dict[str, subprocess.Popen[str]]) -> None:
    """Latency fault → HighLatency fires → receiver → high-latency runbook deployment (rollout undo) → p95 back
    under the threshold; rollback always; the scorecard artifact says so."""
    result = env.finish(launched["latency"])
    card = result["scorecard"]
    phases = {p["name"]: p for p in card["phases"]}
    print("latency drill phases:", {k: v["seconds"] for k, v in phases.items()}, card["outcome"], card["outcome_detail"])
    assert (card["scenario"], card["response_path"], card["fault"]) == ("latency", "alert", "FAULT_LATENCY_MS=800"), card
    assert phases["detect"]["seconds"] is not None and phases["respond"]["seconds"] is not None, card
    assert phases["recover"]["seconds"] is not None, card
    assert card["injected_at"] and card["runbook_run_id"], card
    runbook = env.api.get(f"/flow_runs/{card['runbook_run_id']}").json()
    assert runbook["parameters"]["params"]["namespace"] == NS_ALERT and runbook["parameters"]["params"]["service"] == "slow"
    assert any("to the previous ReplicaSet: allowed, executed" in r for r in card["responders"]), card["responders"]
    assert card["rollback_ok"] is True, card
    assert env.faults(NS_ALERT, "slow") == {}
    arts = env.artifacts(result["flow_run_id"])
    assert {"drill-scorecard", "drill-latency-record", "drill-latency-phases"} <= {a["key"] for a in arts}
    text = next(a["data"] for a in arts if a["key"] == "drill-scorecard")
    for name in ("detect", "respond", "recover"):  # the human-readable table, not only the machine-readable block
        assert f"| {name} | {phases[name]['seconds']:.1f} s |" in text, text
    assert "## Rollback\n- verified" in text and "to the previous ReplicaSet: allowed, executed" in text
