"""A local Slack in a thread, for tests: the sandbox's own implementation (k8s_runbooks.sandbox.localchat.slack) on a
free port, plus interaction requests signed with the app's signing secret.

    with LocalSlack(token="xoxb-test", signing_secret="s3cret", channels={"C0APPROVE"}) as slack:
        ...  # point K8S_RUNBOOKS_SLACK_API_URL at slack.api_url
        body, headers = slack.press(message, "approve:rollout_undo", user="U0ALICE", username="alice")

Knobs: `rate_limit_next` (429 with Retry-After), `delay_seconds`, `fail_with` (see localchat.slack.Knobs).
"""

from __future__ import annotations

from k8s_runbooks.sandbox.localchat.slack import Message, SlackWebAPI, press_request, sign
from tests.helpers.http_receiver import LocalHTTPServer

__all__ = ["LocalSlack", "Message"]


class LocalSlack(SlackWebAPI, LocalHTTPServer):
    def __init__(self, token: str, signing_secret: str, channels: set[str], groups: dict[str, list[str]] | None = None) -> None:
        SlackWebAPI.__init__(self, token, channels, groups)
        LocalHTTPServer.__init__(self, self.handle)
        self.signing_secret = signing_secret
        self.api_url = f"{self.base_url}/api"

    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        return sign(body, secret or self.signing_secret, timestamp)

    def press(self, msg: Message, action_id: str, user: str, username: str, *, value: str | None = None,
              timestamp: int | None = None, secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A block_actions interaction for a button of `msg`, form-encoded and signed (with `secret` if given)."""
        return press_request(msg, action_id, user, username, secret or self.signing_secret, value=value, timestamp=timestamp,
                             response_url=f"{self.base_url}/actions/T0LOCAL/1/x")
