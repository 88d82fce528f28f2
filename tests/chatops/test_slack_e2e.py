"""Slack approvals end to end, from the sandbox: `k8s-runbooks run pod-crash --approval required` on a crash-looping
Deployment of this module's own, the alert receiver as a real process (the approval desk with the Prefect adapter),
a local Slack and a local PagerDuty.

- the run posts its Block Kit request to Slack; forged, stale and unsigned presses are 401 and a non-allowlisted
  press is answered privately and recorded, and none of them resumes the run; a signed press by an allowlisted
  user resumes it, the guard's audit names that Slack user, a replay of that press is 401, and the message is
  updated with the outcome and again at the run's end;
- a run nobody approves in time escalates (a channel message, a PagerDuty page with one dedup key for the
  incident); approved during the escalation, it resolves and the page resolves with it;
- the diagnosed crash came with the newest revision, so the fix is a roll-back, which touches both replicas: the
  two-person rule applies (the containment options after it do not lead): the first press waits for a second
  approver, and an answer through the Prefect UI's form (`POST /resume`, what the Resume dialog sends) is recorded
  as unverified and acts on nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.conftest import REPO, Sandbox, free_ports
from tests.helpers.pagerduty import LocalPagerDuty
from tests.helpers.slack_api import LocalSlack, Message
from tests.helpers.wait import wait_for
from tests.reliability._faults_helpers import NS, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

DEPLOYMENT = "slack-e2e"
TOKEN, SECRET, CHANNEL = "xoxb-e2e-bot-token", "e2e-slack-signing-secret", "C0INCIDENTS"
PD_KEY = "E2EPAGERDUTYROUTINGKEY0000000001"
POLICY = f"""
version: 1
policies:
  - name: shop
    namespaces: [{NS}]
    channel: {CHANNEL}
    approvers: {{users: [U0ALICE, U0CAROL]}}
    two_person_min_pods: 2  # the module's Deployment has 2 replicas: a roll-back or restart touches both
    escalation:
      - {{notify: channel}}
      - {{notify: page, routing_key: primary, wait_seconds: 300}}
"""


@dataclass
class E2E:
    box: Sandbox
    slack: LocalSlack
    pd: LocalPagerDuty
    receiver_url: str
    env: dict[str, str]
    state_dir: Path
    api: httpx.Client
    procs: list[subprocess.Popen[str]]
    logs: dict[int, IO[str]] = field(default_factory=dict)

    def start_run(self, timeout_s: int) -> subprocess.Popen[str]:
        args = ["run", "pod-crash", "-n", NS, "-d", DEPLOYMENT, "--approval", "required", "--approval-timeout", str(timeout_s),
                "--set", "stable_seconds=5", "--set", "recovery_timeout_seconds=150", "--set", "verify_window_seconds=30",
                "--set", "verify_timeout_seconds=150"]
        # The run's output goes to a file, not a pipe: nobody reads a pipe while the test waits on Slack, and a run
        # that logs more than the pipe's 64 KiB before its approval (retries under load) would block on its write.
        out = open(self.state_dir.parent / f"run-{len(self.procs)}.log", "w+")  # noqa: SIM115 - closed in output()
        proc = subprocess.Popen([sys.executable, "-m", "k8s_runbooks_cli", *args], cwd=REPO, env=self.env, text=True,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.logs[proc.pid] = out
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        log = self.logs[proc.pid]
        log.seek(0)
        return log.read()

    def finish(self, proc: subprocess.Popen[str], timeout: float = 420) -> str:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"the run did not finish:\n{self.output(proc)[-4000:]}") from None
        return self.output(proc)

    def approval(self, after: set[str], proc: subprocess.Popen[str]) -> Message:
        def posted() -> Message | None:
            msg = next((m for ts, m in self.slack.messages.items() if ts not in after and LocalSlack.buttons(m)), None)
            if msg is None and proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) without posting its approval to Slack:\n"
                                     f"{self.output(proc)[-4000:]}")
            return msg

        return wait_for(posted, 240, "the approval message in Slack")

    def open_runs(self) -> list[str]:
        """This module's pod-crash runs that have not ended (paused for approval, running, or about to)."""
        r = self.api.post("/flow_runs/filter", json={
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"]}}},
            "flows": {"name": {"any_": ["pod-crash"]}}})
        r.raise_for_status()
        return [x["id"] for x in r.json() if x["parameters"]["params"]["deployment"] == DEPLOYMENT]

    def send(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.receiver_url}/v1/slack/interactions", content=body, headers=headers, timeout=10)

    def run_state(self, run_id: str) -> str:
        r = self.api.get(f"/flow_runs/{run_id}")
        r.raise_for_status()
        return str(r.json()["state"]["type"])

    def audit(self, run_id: str, name: str = "audit.jsonl") -> list[dict[str, Any]]:
        path = self.state_dir / name
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r.get("flow_run_id") == run_id]


@pytest.fixture(scope="module")
def e2e(sandbox_only: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    box = sandbox_only
    tmp = tmp_path_factory.mktemp("slack-e2e")
    (tmp / "chatops.yaml").write_text(POLICY)
    cluster = Cluster(box)
    cluster.ensure(box, DEPLOYMENT, replicas=2)
    with LocalSlack(TOKEN, SECRET, {CHANNEL}) as slack, LocalPagerDuty({PD_KEY}) as pd:
        chat = {"K8S_RUNBOOKS_SLACK_BOT_TOKEN": TOKEN, "K8S_RUNBOOKS_SLACK_SIGNING_SECRET": SECRET,
                "K8S_RUNBOOKS_SLACK_API_URL": slack.api_url, "K8S_RUNBOOKS_CHATOPS_CONFIG": str(tmp / "chatops.yaml"),
                "K8S_RUNBOOKS_PAGERDUTY_EVENTS_URL": pd.url, "K8S_RUNBOOKS_PAGERDUTY_ROUTING_KEY": PD_KEY}
        env = {**box.env, **chat, "K8S_RUNBOOKS_STATE_DIR": str(tmp / "state"), "K8S_RUNBOOKS_REPORTS_DIR": str(tmp / "reports"),
               "K8S_RUNBOOKS_COOLDOWN_SECONDS": "0", "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        port = free_ports(1)[0]
        log = open(tmp / "receiver.log", "wb")  # noqa: SIM115 - closed below
        receiver = subprocess.Popen(
            [sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--host", "127.0.0.1", "--port", str(port),
             "--routes", str(REPO / "tests" / "alert-routes.test.yaml"), "--spool", str(tmp / "spool.sqlite3")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).json()["slack"] is not None, 120,
                     f"the receiver with Slack approvals on\n{(tmp / 'receiver.log').read_text()[-2000:]}")
            assert box.prefect_api_url
            with httpx.Client(base_url=box.prefect_api_url, timeout=10) as api:
                e2e = E2E(box, slack, pd, url, env, tmp / "state", api, [])
                yield e2e
        finally:
            for proc in e2e.procs if "e2e" in locals() else []:  # a failed test leaves its run waiting: stop it
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(30)
            for out in e2e.logs.values() if "e2e" in locals() else []:
                out.close()
            os.killpg(receiver.pid, signal.SIGTERM)
            receiver.wait(30)
            log.close()
            cluster.delete(DEPLOYMENT)


@pytest.fixture(autouse=True)
def runs_ended(e2e: E2E) -> Iterator[None]:
    """Every test starts with no run of the module's Deployment left. A test that fails leaves its run paused for
    approval, and that run holds the Deployment's remediation lock (a Lease it renews while it lives): the next
    test's run would wait for the lock and never post its approval. The run is cancelled through Prefect as the
    receiver cancels a run whose alert resolved (the approval wait ends, nothing is done, the lock is released);
    a run that does not end on it (busy acting) is killed and its lock runs out by itself (LEASE_SECONDS)."""
    first = len(e2e.procs)
    yield
    left = [p for p in e2e.procs[first:] if p.poll() is None]
    if not left:
        return
    for run_id in e2e.open_runs():
        e2e.api.post(f"/flow_runs/{run_id}/set_state", json={
            "state": {"type": "CANCELLING", "message": "the test that started this run is over"}, "force": True})
    for proc in left:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_a_signed_press_by_an_allowlisted_user_resumes_the_run_and_the_audit_names_them(e2e: E2E) -> None:
    Cluster(e2e.box).inject_crash(e2e.box, DEPLOYMENT)
    proc = e2e.start_run(timeout_s=300)
    msg = e2e.approval(set(), proc)
    buttons = LocalSlack.buttons(msg)
    approve = next(a for a in buttons if a.startswith("approve:"))
    run_id = json.loads(buttons[approve])["r"]
    assert "reject" in buttons and msg.channel == CHANNEL
    header = msg.blocks[0]["text"]["text"]
    assert header == f"Approval needed: pod-crash on {NS}/deployment/{DEPLOYMENT}", header
    # The diagnosis engine's ranked cause is in the evidence, its fix leads (the primary button) with the blast radius
    # the guard counts (every replica for a roll-back); the containment options follow it.
    text = json.dumps(msg.blocks)
    assert f"crash-after-rollout on Deployment/{DEPLOYMENT}" in text and "the previous revision was healthy" in text, text
    assert approve == "approve:rollout_undo" and "blast radius 2 pod(s)" in text, (list(buttons), text)

    for body, headers, why in (
        (*e2e.slack.press(msg, approve, "U0ALICE", "alice", secret="forged-secret"), "invalid X-Slack-Signature"),
        (*e2e.slack.press(msg, approve, "U0ALICE", "alice", timestamp=int(time.time()) - 600), "stale"),
        (e2e.slack.press(msg, approve, "U0ALICE", "alice")[0], {"Content-Type": "application/x-www-form-urlencoded"}, "missing"),
    ):
        r = e2e.send(body, headers)
        assert r.status_code == 401 and why in r.json()["detail"], r.text
    r = e2e.send(*e2e.slack.press(msg, approve, "U0MALLORY", "mallory"))
    assert r.status_code == 200, r.text
    wait_for(lambda: any(e["user"] == "U0MALLORY" for e in e2e.slack.ephemerals), 60, "the ephemeral answer to mallory")
    assert "not an approver" in e2e.slack.ephemerals[-1]["text"]
    assert e2e.run_state(run_id) == "PAUSED" and proc.poll() is None

    body, headers = e2e.slack.press(msg, approve, "U0ALICE", "alice")
    assert e2e.send(body, headers).status_code == 200
    replay = e2e.send(body, headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    wait_for(lambda: any("1 of 2 approvals" in u["text"] for u in msg.updates), 60, "the first of two approvals")
    assert e2e.run_state(run_id) == "PAUSED"
    assert e2e.send(*e2e.slack.press(msg, approve, "U0CAROL", "carol")).status_code == 200
    out = e2e.finish(proc)
    assert proc.returncode == 0, out[-4000:]

    both = "alice (Slack U0ALICE, verified) + carol (Slack U0CAROL, verified)"
    executed = [r for r in e2e.audit(run_id) if r["decision"] == "allowed" and r.get("outcome")]
    assert executed and executed[0]["actor"] == both, e2e.audit(run_id)
    assert executed[0]["action"]["kind"] == approve.removeprefix("approve:")
    events = [(e["event"], e["actor"]) for e in e2e.audit(run_id, "approvals.jsonl")]
    assert ("press-refused", "mallory (Slack U0MALLORY)") in events, events
    assert ("answer", both) in events, events
    texts = [u["text"] for u in msg.updates]
    assert any("Approved by alice + carol" in t for t in texts) and "Run finished: resolved" in texts[-1], texts
    assert any(m.thread_ts == msg.ts and "Incident resolved" in m.text for m in e2e.slack.posted(CHANNEL))
    assert e2e.pd.events == []  # answered in time: nobody was paged


def test_a_timeout_pages_and_the_page_resolves_with_the_run(e2e: E2E) -> None:
    Cluster(e2e.box).inject_crash(e2e.box, DEPLOYMENT)
    seen = set(e2e.slack.messages)
    proc = e2e.start_run(timeout_s=8)
    msg = e2e.approval(seen, proc)
    run_id = json.loads(next(iter(LocalSlack.buttons(msg).values())))["r"]
    wait_for(lambda: e2e.pd.open, 120, "the page")
    (dedup, trigger), = e2e.pd.open.items()
    assert dedup == f"k8s-runbooks/{run_id}" and trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == f"{NS}/deployment/{DEPLOYMENT}"
    assert any("Incident escalated" in m.text for m in e2e.slack.posted(CHANNEL) if m.ts not in seen and m is not msg)
    assert e2e.run_state(run_id) == "PAUSED"  # still open during the escalation

    approve = next(a for a in LocalSlack.buttons(msg) if a.startswith("approve:"))
    for user, name in (("U0ALICE", "alice"), ("U0CAROL", "carol")):
        assert e2e.send(*e2e.slack.press(msg, approve, user, name)).status_code == 200
    out = e2e.finish(proc)
    assert proc.returncode == 0, out[-4000:]
    assert e2e.pd.events[-1] == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": dedup}
    assert e2e.pd.open == {}
    events = [e["event"] for e in e2e.audit(run_id, "approvals.jsonl")]
    assert events.index("escalated") < events.index("paged") < events.index("answer") < events.index("page_resolved"), events


def test_a_prefect_ui_answer_is_unverified_and_cannot_meet_the_two_person_rule(e2e: E2E) -> None:
    Cluster(e2e.box).inject_crash(e2e.box, DEPLOYMENT)
    seen = set(e2e.slack.messages)
    proc = e2e.start_run(timeout_s=300)
    msg = e2e.approval(seen, proc)
    action = next(a for a in LocalSlack.buttons(msg) if a.startswith("approve:")).removeprefix("approve:")
    run_id = json.loads(next(iter(LocalSlack.buttons(msg).values())))["r"]
    wait_for(lambda: e2e.run_state(run_id) == "PAUSED", 60, "the run paused")
    r = e2e.api.post(f"/flow_runs/{run_id}/resume",
                     json={"run_input": {"approve": True, "action": action, "approver": "bob", "comment": "from the UI"}})
    assert r.status_code in (200, 201) and r.json()["status"] == "ACCEPT", r.text
    out = e2e.finish(proc)
    assert proc.returncode != 0 and "acts on nothing" in out, out[-3000:]
    assert not [x for x in e2e.audit(run_id) if x["decision"] == "allowed" and x.get("outcome")]
    answers = [e for e in e2e.audit(run_id, "approvals.jsonl") if e["event"] in ("answer", "void")]
    assert [(e["event"], e["actor"]) for e in answers] == [("answer", "bob — unverified (Prefect UI)"),
                                                           ("void", "bob — unverified (Prefect UI)")], answers
    assert "two distinct verified approvers" in answers[1]["detail"]
    assert "acts on nothing" in msg.updates[0]["text"]


def test_a_slow_slack_never_holds_the_run_and_a_rejection_pages_without_resolving(e2e: E2E) -> None:
    """Slack answers only after 30 s (longer than every timeout): the run pauses anyway, the approval is answered in
    the Prefect UI, the failure is logged and noted. The rejection escalates (the channel, then the page) and the
    page stays open: a rejected run did not resolve the incident."""
    Cluster(e2e.box).inject_crash(e2e.box, DEPLOYMENT)
    e2e.slack.delay_seconds = 30
    opened = set(e2e.pd.open)
    try:
        started = time.monotonic()
        proc = e2e.start_run(timeout_s=300)

        def paused_run() -> str | None:
            r = e2e.api.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
                                                       "flows": {"name": {"any_": ["pod-crash"]}}})
            r.raise_for_status()
            return next((x["id"] for x in r.json() if x["parameters"]["params"]["deployment"] == DEPLOYMENT), None)

        run_id = wait_for(paused_run, 180, "the run paused while Slack hangs")
        r = e2e.api.post(f"/flow_runs/{run_id}/resume",
                         json={"run_input": {"approve": False, "approver": "bob", "comment": "Slack is down; not now"}})
        assert r.json()["status"] == "ACCEPT", r.text
        out = e2e.finish(proc)
    finally:
        e2e.slack.delay_seconds = 0
    assert proc.returncode == 0 and "rejected by bob — unverified (Prefect UI)" in out, out[-3000:]
    assert time.monotonic() - started < 240  # bounded: the run's end waits at most a few Slack timeouts
    assert "Slack approval message not posted" in out, out[-3000:]  # logged
    events = [(e["event"], e["actor"]) for e in e2e.audit(run_id, "approvals.jsonl")]
    assert ("slack-failed", "") in events and ("paged", "primary") in events, events
    assert [k for k in e2e.pd.open if k not in opened] == [f"k8s-runbooks/{run_id}"]  # the page stays open
    assert ("page-open", "primary") in events, events
