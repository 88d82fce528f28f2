"""Slack approvals from the user's seat, through the sandbox's own components: `sandbox up` started the local Slack +
PagerDuty (component `chatops`) and gave the runner and the receiver its URLs, secrets and approval policy. Every
step is a CLI command in a subprocess, as in the README walkthrough:

    k8s-runbooks run pod-crash -n shop -d D --approval required --approval-timeout 6 --submit
    k8s-runbooks sandbox slack messages                      -> the approval message and its buttons
    k8s-runbooks sandbox slack press --forge | --stale ...   -> 401, nothing resumes
    k8s-runbooks sandbox slack press --user U0MALLORY ...    -> answered privately, nothing resumes
    k8s-runbooks sandbox pagerduty incidents                 -> nobody approved within 6 s: primary on-call paged
    k8s-runbooks sandbox slack press --user U0ALICE --action approve   -> the run resumes and acts as alice
    k8s-runbooks sandbox slack press --replay                -> 401 replayed
    the run resolves; the page resolves with it; the guard's audit names alice (Slack U0ALICE, verified).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLI, Sandbox
from tests.helpers.wait import wait_for
from tests.reliability._faults_helpers import NS, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

DEPLOYMENT = "slack-walkthrough"


@pytest.fixture(scope="module")
def target(sandbox_only: Sandbox) -> Iterator[str]:
    cluster = Cluster(sandbox_only)
    cluster.ensure(sandbox_only, DEPLOYMENT, replicas=2)
    try:
        yield DEPLOYMENT
    finally:
        cluster.delete(DEPLOYMENT)


def cli(box: Sandbox, *args: str) -> str:
    """A sandbox CLI command as the person types it; its exit code must be 0."""
    return box.cli("sandbox", *args, timeout=120).stdout


def audit(box: Sandbox, run_id: str, name: str) -> list[dict]:
    assert box.state_dir is not None
    path = box.state_dir / "runbooks" / name  # the runner's K8S_RUNBOOKS_STATE_DIR
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("flow_run_id") == run_id]


def test_slack_walkthrough_from_the_sandbox(sandbox_only: Sandbox, target: str, tmp_path: Path) -> None:
    box = sandbox_only
    assert box.state_dir is not None and box.prefect_api_url
    status = cli(box, "status")
    assert re.search(r"chatops\s+.*\bup\b", status), status
    cluster = Cluster(box)
    cli(box, "fault", "crash", "--namespace", NS, "--deployment", target, "--value", "1")
    wait_for(lambda: len(cluster.crash_looping(target)) >= 2, 150, f"{target} pods in CrashLoopBackOff", interval=1)

    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen(
            [*CLI, "run", "pod-crash", "-n", NS, "-d", target, "--approval", "required", "--approval-timeout", "6", "--submit",
             "--set", "stable_seconds=5", "--set", "recovery_timeout_seconds=150", "--set", "verify_window_seconds=30",
             "--set", "verify_timeout_seconds=150"],
            env=box.env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        run_id = wait_for(lambda: (m := re.search(r"flow run \S+ \(([0-9a-f-]{36})\)", log.read_text())) and m.group(1),
                          60, "the submitted run's id")
        headline = f"Approval needed: pod-crash on {NS}/deployment/{target}"
        listing = wait_for(lambda: headline in (out := cli(box, "slack", "messages", "--channel", "#incidents")) and out,
                           300, "the approval message in the local Slack", interval=2)
        assert "[approve:" in listing and "[reject]" in listing, listing

        def paused() -> bool:
            r = httpx.get(f"{box.prefect_api_url}/flow_runs/{run_id}", timeout=10)
            return r.json()["state"]["type"] == "PAUSED"

        for flag, refusal in (("--forge", "401 invalid X-Slack-Signature"), ("--stale", "401 stale request")):
            out = cli(box, "slack", "press", "--user", "U0ALICE", "--action", "approve", flag)
            assert refusal in out, out
        out = cli(box, "slack", "press", "--user", "U0MALLORY", "--action", "approve")
        assert "receiver: 200" in out and "Not done: you are not an approver" in out, out
        assert paused() and run.poll() is None, log.read_text()[-3000:]

        # Nobody allowed answered within 6 s: the escalation chain posts in the channel and pages primary on-call.
        page = wait_for(lambda: f"k8s-runbooks/{run_id}" in (out := cli(box, "pagerduty", "incidents")) and out,
                        120, "the page", interval=2)
        assert re.search(r"primary\s*│\s*triggered", page), page
        assert paused(), "the approval stays open during the escalation"

        out = cli(box, "slack", "press", "--user", "U0ALICE", "--action", "approve")
        assert "Approved by alice" in out, out
        out = cli(box, "slack", "press", "--replay")
        assert "401 replayed request" in out, out
        run.wait(420)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
    output = log.read_text()
    assert run.returncode == 0 and "by alice (Slack U0ALICE, verified)" in output, output[-4000:]

    executed = [r for r in audit(box, run_id, "audit.jsonl") if r["decision"] == "allowed" and r.get("outcome")]
    assert [r["actor"] for r in executed] == ["alice (Slack U0ALICE, verified)"], executed
    events = [(e["event"], e["actor"]) for e in audit(box, run_id, "approvals.jsonl")]
    assert ("press-refused", "mallory (Slack U0MALLORY)") in events, events
    names = [e for e, _ in events]
    assert names.index("paged") < names.index("answer") < names.index("page_resolved"), events

    page = wait_for(lambda: re.search(rf"k8s-runbooks/{run_id}.*│\s*primary\s*│\s*resolved", cli(box, "pagerduty", "incidents")),
                    30, "the page resolved")
    listing = cli(box, "slack", "messages")
    assert "Run finished: resolved" in listing and "(buttons removed)" in listing, listing

    secrets = [line.split("=", 1)[1] for line in (box.state_dir / "secrets" / "chatops.env").read_text().splitlines()
               if "=" in line and not line.startswith("#")]
    for path in (box.state_dir / "logs").glob("*.log"):
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], f"a secret of the local Slack/PagerDuty is in {path}"
