"""The receiver's POST /v1/slack/interactions with the approval desk, in-process, against a local Slack.

Paused runs live in `PausedRuns` (tests/helpers/paused_runs.py, Prefect's resume rules in memory); tests/chatops/test_slack_e2e.py does the same
against a real Prefect server and a real runbook run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from k8s_runbooks.alerts.app import create_app
from k8s_runbooks.alerts.routing import load_routes
from k8s_runbooks.alerts.spool import Spool
from k8s_runbooks.chatops import attest
from k8s_runbooks.chatops.blocks import ApprovalRequest, PlannedAction, approval_blocks
from k8s_runbooks.chatops.desk import ApprovalDesk, RunView
from k8s_runbooks.chatops.policy import parse_policies
from k8s_runbooks.chatops.slack import SlackClient
from tests.helpers.paused_runs import PausedRuns
from tests.helpers.slack_api import LocalSlack, Message
from tests.helpers.wait import wait_for
from tests.reliability.conftest import ROUTES, AsgiClient

TOKEN, SECRET = "xoxb-desk-test", "desk-signing-secret"
CHANNEL, RUN, NONCE = "C0APPROVE", "6a0f0d8e-1b7e-4b3c-9d55-3a7f1c2b9e10", "abc123"
POLICIES = parse_policies(f"""
version: 1
policies:
  - name: shop
    namespaces: [shop]
    channel: {CHANNEL}
    approvers: {{users: [U0ALICE], groups: [S0ONCALL]}}
    two_person_min_pods: 3
""")
PATH = "/v1/slack/interactions"


@dataclass
class Env:
    client: AsgiClient
    slack: LocalSlack
    desk: ApprovalDesk
    runs: PausedRuns
    message: Message

    def send(self, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(PATH, content=body, headers=headers)

    def press(self, action_id: str, user: str, name: str, **kw: Any) -> Any:
        body, headers = self.slack.press(self.message, action_id, user, name, **kw)
        return self.send(body, headers)

    def processed(self, n: int) -> None:
        wait_for(lambda: self.desk.processed >= n, 20, f"{n} presses processed")


def _request(pods_undo: int = 3) -> ApprovalRequest:
    return ApprovalRequest(
        run_id=RUN, nonce=NONCE, flow="pod-crash", target="shop/checkout", impact="3 of 3 pods crash-looping",
        findings=["Error exit 1: last log line \"boom\" (checkout-1)"], expires_at=datetime.now(timezone.utc) + timedelta(minutes=5),
        actions=[PlannedAction("rollout_undo", "roll back shop/checkout", 0.9, "allowed", "bad rollout", pods_undo, pods_undo >= 3),
                 PlannedAction("delete_pods", "delete 1 pod", 0.3, "allowed", "restart the crashing pod", 1)],
        run_url="http://prefect/runs/x")


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[Env]:
    with LocalSlack(TOKEN, SECRET, {CHANNEL}, groups={"S0ONCALL": ["U0CAROL"]}) as slack:
        runs = PausedRuns({RUN: RunView(RUN, "PAUSED", f"{NONCE}-1", time.time() + 300, "shop", None, True)})
        desk = ApprovalDesk(SecretStr(SECRET), POLICIES, runs, tmp_path / "desk.sqlite3", slack=SlackClient(TOKEN, slack.api_url))
        spool = Spool(tmp_path / "spool.sqlite3")
        client = AsgiClient(create_app(load_routes(ROUTES), spool, approvals=desk))
        req = _request()
        ts = SlackClient(TOKEN, slack.api_url).post_message(CHANNEL, req.headline(), approval_blocks(req))["ts"]
        desk.start()
        try:
            yield Env(client, slack, desk, runs, slack.messages[ts])
        finally:
            desk.stop()
            client.close()
            spool.close()


def test_unsigned_forged_and_stale_presses_are_401_and_resume_nothing(env: Env) -> None:
    body, headers = env.slack.press(env.message, "approve:delete_pods", "U0ALICE", "alice")
    unsigned = {"Content-Type": headers["Content-Type"]}
    forged = env.slack.press(env.message, "approve:delete_pods", "U0ALICE", "alice", secret="guessed")
    stale = env.slack.press(env.message, "approve:delete_pods", "U0ALICE", "alice", timestamp=int(time.time()) - 301)
    for b, h, why in ((body, unsigned, "missing"), (*forged, "invalid X-Slack-Signature"), (*stale, "stale request")):
        r = env.send(b, h)
        assert r.status_code == 401 and why in r.json()["detail"], r.text
        assert r.headers["www-authenticate"] == "Slack-Signature"
    assert env.desk.pending() == 0 and env.runs.inputs == {} and env.runs.records == []


def test_a_replayed_press_is_401(env: Env) -> None:
    body, headers = env.slack.press(env.message, "approve:delete_pods", "U0MALLORY", "mallory")
    assert env.send(body, headers).status_code == 200
    again = env.send(body, headers)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]
    env.processed(1)
    assert env.runs.inputs == {}


def test_a_press_by_someone_not_allowlisted_is_answered_privately_and_recorded(env: Env) -> None:
    assert env.press("approve:delete_pods", "U0MALLORY", "mallory").status_code == 200
    env.processed(1)
    assert env.runs.inputs == {} and env.runs.runs[RUN].state == "PAUSED"
    (key, record), = env.runs.records
    assert key.startswith("chatops-press-") and record["user"] == "U0MALLORY" and record["outcome"] == "refused"
    assert env.slack.ephemerals[-1]["user"] == "U0MALLORY" and "not an approver" in env.slack.ephemerals[-1]["text"]
    assert env.message.updates == []  # the message stays open for the real approvers


def test_an_allowlisted_press_resumes_the_run_with_an_attested_approver(env: Env) -> None:
    assert env.press("approve:delete_pods", "U0ALICE", "alice").status_code == 200
    env.processed(1)
    answer = env.runs.inputs[RUN]
    assert answer["approve"] is True and answer["action"] == "delete_pods"
    assert answer["approver"] == "alice (Slack U0ALICE, verified)"
    got = attest.verify(SecretStr(SECRET), answer["attestation"])
    assert got is not None and (got.run, got.pause, got.action) == (RUN, f"{NONCE}-1", "delete_pods")
    assert [a.id for a in got.approvers] == ["U0ALICE"]
    assert attest.verify(SecretStr("other"), answer["attestation"]) is None
    update = env.message.updates[-1]
    assert "Approved by alice" in update["text"]
    assert not LocalSlack.buttons(Message(CHANNEL, "x", "", update["blocks"]))  # closed: no buttons left
    assert env.runs.records[-1][1]["outcome"] == "approved"


def test_reject_resumes_with_approve_false(env: Env) -> None:
    env.press("reject", "U0CAROL", "carol")  # carol is in user group S0ONCALL
    env.processed(1)
    answer = env.runs.inputs[RUN]
    assert answer["approve"] is False and "action" not in answer and answer["approver"] == "carol (Slack U0CAROL, verified)"
    assert "Rejected by carol" in env.message.updates[-1]["text"]


def test_two_person_rule_needs_two_distinct_approvers(env: Env) -> None:
    env.press("approve:rollout_undo", "U0ALICE", "alice")
    env.press("approve:rollout_undo", "U0ALICE", "alice")  # the same person again counts once
    env.processed(2)
    assert env.runs.inputs == {} and "1 of 2 approvals" in env.message.updates[-1]["text"]
    assert "second approver" in env.slack.ephemerals[-1]["text"]
    env.press("approve:rollout_undo", "U0CAROL", "carol")
    env.processed(3)
    answer = env.runs.inputs[RUN]
    assert answer["approver"] == "alice (Slack U0ALICE, verified) + carol (Slack U0CAROL, verified)"
    got = attest.verify(SecretStr(SECRET), answer["attestation"])
    assert got is not None and [a.id for a in got.approvers] == ["U0ALICE", "U0CAROL"]


@pytest.mark.parametrize("change", ["expired", "resumed already", "another approval", "unknown run", "other namespace"])
def test_closed_expired_or_unknown_approvals_act_on_nothing(env: Env, change: str) -> None:
    run = env.runs.runs[RUN]
    env.runs.runs[RUN] = {
        "expired": replace(run, pause_expires=time.time() - 1),
        "resumed already": replace(run, state="RUNNING"),
        "another approval": replace(run, pause_key="fff999-1"),
        "unknown run": run,
        "other namespace": replace(run, namespace="payments"),
    }[change]
    if change == "unknown run":
        del env.runs.runs[RUN]
    env.press("approve:delete_pods", "U0ALICE", "alice")
    env.processed(1)
    assert env.runs.inputs == {}
    assert env.slack.ephemerals and env.slack.ephemerals[-1]["user"] == "U0ALICE"
    assert env.slack.ephemerals[-1]["text"].startswith("Not done:")


@pytest.mark.parametrize(("body", "ctype", "status"), [
    (b"payload=%7B", "application/x-www-form-urlencoded", 400),
    (b"nopayload=1", "application/x-www-form-urlencoded", 400),
    (b'{"type": "block_actions"}', "application/json", 415),
    (b"payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22bad%20id%22%7D%7D", "application/x-www-form-urlencoded", 400),
    (b"\xff\xfe", "application/x-www-form-urlencoded", 400),
])
def test_signed_but_unusable_bodies_are_4xx(env: Env, body: bytes, ctype: str, status: int) -> None:
    headers = {**env.slack.sign(body), "Content-Type": ctype}
    r = env.send(body, headers)
    assert r.status_code == status and r.json()["error"], r.text
    assert env.desk.pending() == 0


def test_without_a_desk_every_interaction_is_401(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3")
    client = AsgiClient(create_app(load_routes(ROUTES), spool))
    try:
        r = client.post(PATH, content=b"payload=%7B%7D", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 401 and "not configured" in r.json()["detail"]
    finally:
        client.close()
        spool.close()
