"""The shipped example policy file and Slack app manifest are valid and fit the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k8s_runbooks.chatops.policy import load_policies, parse_policies
from k8s_runbooks.errors import ConfigError
from tests.conftest import REPO


def test_the_example_policies_load_and_match_by_route_then_namespace() -> None:
    policies = load_policies(REPO / "deployments" / "chatops.example.yaml")
    assert policies.for_run("pod-crash", "payments").name == "shop"  # type: ignore[union-attr]
    assert policies.for_run(None, "checkout-eu").name == "shop"  # type: ignore[union-attr]
    assert policies.for_run(None, "payments").name == "everything-else"  # type: ignore[union-attr]
    shop = policies.for_run(None, "shop")
    assert shop is not None and shop.needs_two(3) and not shop.needs_two(2)
    assert [level.notify for level in shop.escalation] == ["channel", "page", "page"]


def test_a_missing_policy_file_means_no_slack_approvals(tmp_path: Path) -> None:
    assert load_policies(tmp_path / "none.yaml").for_run(None, "shop") is None


@pytest.mark.parametrize(("text", "problem"), [
    ("policies: [{name: a, channel: C1}]", "matches nothing"),
    ("policies: [{name: a, namespaces: ['(']}]", "invalid regular expression"),
    ("policies: [{name: a, namespaces: [x], approvers: {users: [alice]}}]", "is not a Slack id"),
    ("policies: [{name: a, namespaces: [x], escalation: [{notify: sms}]}]", "escalation"),
    ("policies: {", "not valid YAML"),
])
def test_bad_policy_files_fail_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_policies(text, "test.yaml")


def test_the_slack_app_manifest_points_at_the_receiver_with_the_scopes_we_use() -> None:
    manifest = yaml.safe_load((REPO / "deployments" / "slack-app-manifest.yaml").read_text())
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/v1/slack/interactions")
    # chat.postMessage, chat.update, chat.postEphemeral: chat:write; usergroups.users.list: usergroups:read
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"chat:write", "usergroups:read"}


def test_check_policies_lists_a_valid_file_and_explains_a_bad_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    def cli(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "k8s_runbooks_cli", "alerts", "check-policies", str(path)],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    ok = cli(REPO / "deployments" / "chatops.example.yaml")
    assert ok.returncode == 0 and "shop: routes=['pod-crash', 'high-latency']" in ok.stdout, ok.stderr
    assert "escalation: channel (+300s) → page:primary (+600s) → page:secondary" in ok.stdout
    (tmp_path / "bad.yaml").write_text("policies: [{name: a, namespaces: [x], approvers: {users: [alice]}}]")
    bad = cli(tmp_path / "bad.yaml")
    assert bad.returncode == 1 and "is not a Slack id" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
