"""The sandbox component `chatops` (local Slack + PagerDuty) as its own process, started the way `sandbox up` starts
it, used by the product's own clients; what it received survives a restart; the CLI shows it and refuses bad
input with one clear line (no traceback). The full walkthrough with the runner and the receiver is
tests/sandbox_e2e/test_local_slack.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from k8s_runbooks.chatops.pagerduty import PagerDuty
from k8s_runbooks.chatops.policy import load_policies
from k8s_runbooks.chatops.slack import SlackClient
from k8s_runbooks.errors import Forbidden
from k8s_runbooks.sandbox import launchers
from k8s_runbooks.sandbox.launchers import SandboxPorts
from k8s_runbooks.sandbox.localchat import workspace
from k8s_runbooks.sandbox.localchat.component import chat_env, chatops_component, policy_path
from k8s_runbooks.sandbox.supervisor import SandboxConfig
from tests.conftest import CLI, free_ports

pytestmark = pytest.mark.timeout(300)
BUTTONS = [{"type": "section", "block_id": "k8s-runbooks-act-0", "text": {"type": "mrkdwn", "text": "1. rollout_undo"},
            "accessory": {"type": "button", "action_id": "approve:rollout_undo", "value": '{"r":"run-1","n":"n1","a":"rollout_undo","p":2}',
                          "text": {"type": "plain_text", "text": "Approve rollout_undo"}}},
           {"type": "actions", "block_id": "k8s-runbooks-act-buttons",
            "elements": [{"type": "button", "action_id": "reject", "value": '{"r":"run-1","n":"n1","a":null,"p":0}',
                          "text": {"type": "plain_text", "text": "Reject"}}]}]


class Chat:
    def __init__(self, state_dir: Path, port: int, receiver_port: int) -> None:
        self.state_dir, self.port = state_dir, port
        self.comp = chatops_component(state_dir, port)
        self.env = chat_env(state_dir, port)
        self.token = self.env["K8S_RUNBOOKS_SLACK_BOT_TOKEN"]
        self.slack = SlackClient(self.token, self.env["K8S_RUNBOOKS_SLACK_API_URL"], timeout=5, attempts=3)
        ports = SandboxPorts(api=1, prometheus=1, alertmanager=1, pushgateway=1, prefect=1, receiver=receiver_port, chatops=port)
        SandboxConfig(state_dir=state_dir, ports=ports).save()  # what `sandbox up` leaves for the CLI
        self.pid = 0

    def start(self) -> None:
        self.pid = launchers.start(self.state_dir, self.comp)
        launchers.wait_healthy(self.state_dir, self.comp, self.pid)

    def stop(self) -> None:
        if launchers.running_pid(self.state_dir, self.comp):
            launchers.stop_pid(self.pid)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "sandbox", *args, "--state-dir", str(self.state_dir)], capture_output=True, text=True,
                              timeout=60)


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    port, receiver = free_ports(2)
    c = Chat(tmp_path, port, receiver)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_the_product_clients_use_it_and_what_it_received_survives_a_restart(chat: Chat) -> None:
    assert chat.comp.command[-4:] == ["--state-dir", str(chat.state_dir), "--port", str(chat.port)]  # no secret on it
    assert (workspace.secrets_path(chat.state_dir).stat().st_mode & 0o777) == 0o600
    ts = chat.slack.post_message(workspace.CHANNEL, "Approval needed: pod-crash on shop/deployment/web", BUTTONS)["ts"]
    with pytest.raises(Forbidden, match="invalid_auth"):
        SlackClient("xoxb-guessed", chat.env["K8S_RUNBOOKS_SLACK_API_URL"]).post_message(workspace.CHANNEL, "x")
    assert chat.slack.usergroup_members("S0ONCALL") == ["U0BOB"]
    primary = SecretStr(chat.env["K8S_RUNBOOKS_PAGERDUTY_ROUTING_KEY"])
    pd = PagerDuty(chat.env["K8S_RUNBOOKS_PAGERDUTY_EVENTS_URL"], timeout=5)
    assert pd.trigger(primary, "k8s-runbooks/run-1", "pod-crash on shop: approval pending", "shop/web", "critical") == "k8s-runbooks/run-1"

    chat.stop()
    chat.start()
    chat.slack.update_message(workspace.CHANNEL, ts, "Approved by alice")  # the message is still known after the restart
    later = chat.slack.post_message(workspace.CHANNEL, "after the restart")["ts"]
    assert later.split(".")[1] > ts.split(".")[1]
    pd.resolve(primary, "k8s-runbooks/run-1")
    state = workspace.read_state(chat.state_dir)
    (first,) = [m for m in state["slack"]["messages"] if m["ts"] == ts]
    assert first["posted_text"].startswith("Approval needed") and [u["text"] for u in first["updates"]] == ["Approved by alice"]
    (incident,) = state["pagerduty"]["incidents"]
    assert (incident["status"], incident["service"]) == ("resolved", "primary")
    assert chat.env["K8S_RUNBOOKS_PAGERDUTY_ROUTING_KEY"] not in workspace.state_path(chat.state_dir).read_text()


def test_rate_limit_knob_answers_429_with_retry_after_and_the_client_waits(chat: Chat) -> None:
    out = chat.cli("slack", "knobs", "--rate-limit", "1", "--retry-after", "2")
    assert out.returncode == 0 and "rate_limit_next=1" in out.stdout and "retry_after=2" in out.stdout, out
    raw = httpx.post(f"http://127.0.0.1:{chat.port}/api/chat.postMessage", json={"channel": workspace.CHANNEL, "text": "x"},
                     headers={"Authorization": f"Bearer {chat.token}"}, timeout=5)
    assert raw.status_code == 429 and raw.headers["Retry-After"] == "2" and raw.json()["error"] == "ratelimited"
    chat.cli("slack", "knobs", "--rate-limit", "1")
    assert chat.slack.post_message(workspace.CHANNEL, "after a 429")["ok"] is True  # retried after Retry-After
    bad = httpx.post(f"http://127.0.0.1:{chat.port}/_sandbox/knobs", json={"rate_limit_next": -1}, timeout=5)
    assert bad.status_code == 400


def test_the_sandbox_policy_allows_alice_and_the_oncall_group_only(chat: Chat) -> None:
    policy = load_policies(policy_path(chat.state_dir)).for_run(None, "shop")
    assert policy is not None and policy.channel == workspace.CHANNEL
    assert policy.approvers.users == ["U0ALICE"] and policy.approvers.groups == ["S0ONCALL"]
    assert "U0MALLORY" not in workspace.GROUPS["S0ONCALL"] and policy.two_person_min_pods is None
    assert [level.notify for level in policy.escalation] == ["channel", "page", "page"]
    assert load_policies(policy_path(chat.state_dir)).for_run(None, "payments-prod") is None


def test_cli_shows_messages_and_pages_and_refuses_bad_input_clearly(chat: Chat) -> None:
    ts = chat.slack.post_message(workspace.CHANNEL, "Approval needed: pod-crash on shop/deployment/web", BUTTONS)["ts"]
    PagerDuty(chat.env["K8S_RUNBOOKS_PAGERDUTY_EVENTS_URL"]).trigger(
        SecretStr(chat.env["K8S_RUNBOOKS_PAGERDUTY_SECONDARY_ROUTING_KEY"]), "k8s-runbooks/run-2", "paged", "shop/web", "error")
    out = chat.cli("slack", "messages", "--channel", "incidents")
    assert out.returncode == 0 and f"#incidents message {ts}: Approval needed" in out.stdout, out
    assert "[approve:rollout_undo]  [reject]" in out.stdout, out.stdout
    out = chat.cli("pagerduty", "incidents")
    assert "k8s-runbooks/run-2" in out.stdout and "secondary" in out.stdout and "triggered" in out.stdout, out.stdout

    for args, says in (
        (["--user", "U0NOBODY", "--action", "approve"], "no user 'U0NOBODY' in the local Slack workspace"),
        (["--user", "alice", "--action", "scale"], "has no button 'scale'; its buttons: approve:rollout_undo, reject"),
        (["--user", "alice", "--action", "approve", "--message", "1.000009"], "no message 1.000009"),
        (["--user", "alice", "--action", "approve", "--forge", "--stale"], "use one at a time"),
        (["--user", "alice", "--action", "approve"], "cannot reach the receiver"),  # nothing listens on its port
        (["--replay"], "no press to replay yet"),
    ):
        out = chat.cli("slack", "press", *args)
        assert out.returncode == 1 and says in out.stderr and "Traceback" not in out.stderr, (args, out.stdout, out.stderr)
    chat.slack.update_message(workspace.CHANNEL, ts, "closed", [])
    out = chat.cli("slack", "press", "--user", "alice", "--action", "approve")
    assert out.returncode == 1 and "no open approval message" in out.stderr, out.stderr


def test_cli_says_when_the_sandbox_has_no_local_slack(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "sandbox", "slack", "messages", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "has no local Slack/PagerDuty" in out.stderr and "Traceback" not in out.stderr, out


def test_messages_follow_prints_what_arrives(chat: Chat) -> None:
    import os
    import signal
    import time

    proc = subprocess.Popen([*CLI, "sandbox", "slack", "messages", "--follow", "--state-dir", str(chat.state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(3)  # following before anything arrives
        ts = chat.slack.post_message(workspace.CHANNEL, "Approval needed: later", BUTTONS)["ts"]
        chat.slack.post_ephemeral(workspace.CHANNEL, "U0MALLORY", "Not done: you are not an approver")
        chat.slack.update_message(workspace.CHANNEL, ts, "Approved by alice", [])
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("updated: Approved by alice" in line for line in lines):
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    text = "".join(lines)
    assert f"message {ts}: Approval needed: later" in text and "ephemeral to mallory (U0MALLORY)" in text, text
    assert f"message {ts} updated: Approved by alice  (buttons removed)" in text, text
