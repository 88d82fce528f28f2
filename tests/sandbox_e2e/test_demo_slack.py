"""`make demo SCENARIO=slack` end to end on a sandbox of its own, with the shipped sandbox routes (the alert path
auto-approves shop: the demo silences it for its target, as the README's walkthrough does)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, PORT_SETTINGS, free_ports, random_pod_subnet, sandbox_env

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1200)]


def test_the_slack_demo_pages_and_resolves_with_alice_s_approval(tmp_path: Path) -> None:
    env = sandbox_env(tmp_path, dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)))), random_pod_subnet())
    env.pop("K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES")  # the shipped routes, as `make demo` has them
    try:
        out = subprocess.run([*CLI, "demo", "--scenario", "slack", "--state-dir", str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=1000)
        text = out.stdout
        assert out.returncode == 0 and "Traceback" not in out.stderr, text[-4000:] + out.stderr[-2000:]
        for said in ("Approval needed: pod-crash on shop/deployment/checkout", "receiver: 401 invalid X-Slack-Signature",
                     "receiver: 401 stale request", "Not done: you are not an approver", "Incident escalated",
                     "Approved by alice", "receiver: 401 replayed request",
                     "resolved: roll back shop/deployment/checkout to the previous ReplicaSet by alice (Slack U0ALICE, verified)",
                     "acted as alice (Slack U0ALICE, verified)"):
            assert said in text, (said, text[-4000:])
        assert text.count("│ primary │ resolved") == 1 and "│ primary │ triggered" in text, text[-3000:]
    finally:
        subprocess.run([*CLI, "sandbox", "down", "--state-dir", str(tmp_path)], capture_output=True, env=env, timeout=120)
