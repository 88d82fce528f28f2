"""SlackClient against a local Slack speaking the Web API's shapes (auth header, JSON bodies, ok/error, 429)."""

from __future__ import annotations

import time

import pytest

from k8s_runbooks.chatops.slack import SlackClient
from k8s_runbooks.errors import Forbidden, NotFound, PermanentError, TransientError
from tests.helpers.slack_api import LocalSlack

TOKEN = "xoxb-local-test-token-123"


@pytest.fixture()
def slack():
    with LocalSlack(TOKEN, "signing", {"C0APPROVE"}, groups={"S0ONCALL": ["U0ALICE", "U0BOB"]}) as s:
        yield s


def test_post_then_update_sends_bearer_token_and_json(slack: LocalSlack) -> None:
    client = SlackClient(TOKEN, slack.api_url, timeout=5)
    answer = client.post_message("C0APPROVE", "hello", [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}])
    post = slack.requests[-1]
    assert post.path == "/api/chat.postMessage" and post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["content-type"].startswith("application/json")
    assert post.json["channel"] == "C0APPROVE" and post.json["blocks"][0]["text"]["text"] == "*hi*"
    client.update_message("C0APPROVE", answer["ts"], "done", [])
    assert slack.messages[answer["ts"]].text == "done" and slack.messages[answer["ts"]].blocks == []


def test_errors_map_to_the_hierarchy_without_the_token(slack: LocalSlack) -> None:
    with pytest.raises(NotFound, match="channel_not_found") as nf:
        SlackClient(TOKEN, slack.api_url).post_message("C0NOPE", "x")
    assert "K8S_RUNBOOKS_SLACK_CHANNEL" in str(nf.value)
    with pytest.raises(Forbidden, match="invalid_auth") as bad:
        SlackClient("xoxb-wrong", slack.api_url).post_message("C0APPROVE", "x")
    slack.fail_with = "not_in_channel"
    with pytest.raises(PermanentError, match="not_in_channel") as perm:
        SlackClient(TOKEN, slack.api_url).post_message("C0APPROVE", "x")
    assert "/invite" in str(perm.value)
    for exc in (nf.value, bad.value, perm.value):
        assert TOKEN not in str(exc) and "xoxb-wrong" not in str(exc)


def test_rate_limit_is_retried_after_retry_after(slack: LocalSlack) -> None:
    slack.rate_limit_next = 1
    started = time.monotonic()
    answer = SlackClient(TOKEN, slack.api_url, attempts=3).post_message("C0APPROVE", "after a 429")
    assert answer["ok"] is True and time.monotonic() - started >= 1.0  # waited the Retry-After
    assert [r.path for r in slack.requests] == ["/api/chat.postMessage", "/api/chat.postMessage"]


def test_persistent_rate_limit_and_slow_slack_are_transient(slack: LocalSlack) -> None:
    slack.rate_limit_next = 5
    with pytest.raises(TransientError, match="429"):
        SlackClient(TOKEN, slack.api_url, attempts=2).post_message("C0APPROVE", "x")
    slack.rate_limit_next, slack.delay_seconds = 0, 1.5
    with pytest.raises(TransientError, match="did not answer within 0.5"):
        SlackClient(TOKEN, slack.api_url, timeout=0.5, attempts=1).post_message("C0APPROVE", "x")


def test_usergroup_members_use_a_form_body(slack: LocalSlack) -> None:
    client = SlackClient(TOKEN, slack.api_url)
    assert client.usergroup_members("S0ONCALL") == ["U0ALICE", "U0BOB"]
    assert slack.requests[-1].headers["content-type"].startswith("application/x-www-form-urlencoded")
    with pytest.raises(NotFound, match="no_such_subteam"):
        client.usergroup_members("S0GONE")
