"""Slack Web API client: the few methods ChatOps uses, over httpx with timeouts and rate-limit handling.

Every call sends `Authorization: Bearer <bot token>`. Write methods post a JSON body
(`Content-Type: application/json; charset=utf-8`); Slack answers HTTP 200 with `{"ok": false, "error": ...}`
for refusals (invalid_auth, channel_not_found, ...) and HTTP 429 with `Retry-After` when rate limited.
The token never appears in a message or a log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from pydantic import SecretStr

from k8s_runbooks.errors import Forbidden, InvalidInput, NotFound, PermanentError, TransientError

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 30.0
# Errors that mean "fix the set-up": the app's token, scopes or channel membership.
_AUTH_ERRORS = {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired", "no_permission",
                "missing_scope", "not_allowed_token_type", "ekm_access_denied", "team_access_not_granted"}
_NOT_FOUND = {"channel_not_found", "message_not_found", "user_not_found", "no_such_subteam", "subteam_not_found"}
_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_HINTS = {
    "not_in_channel": "invite the app to the channel (/invite @k8s-runbooks)",
    "missing_scope": "add the scope to the Slack app (chat:write, usergroups:read) and reinstall it",
    "invalid_auth": "check K8S_RUNBOOKS_SLACK_BOT_TOKEN",
    "channel_not_found": "check the channel id in the approval policy or K8S_RUNBOOKS_SLACK_CHANNEL",
}


class SlackClient:
    """`attempts` bounds the tries of one call (429 and transient errors are retried with `Retry-After` or backoff,
    as long as `budget_seconds` allows)."""

    def __init__(self, token: SecretStr | str, api_url: str = "https://slack.com/api", timeout: float = 5.0,
                 attempts: int = 3, budget_seconds: float = 30.0) -> None:
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not self._token:
            raise InvalidInput("no Slack bot token", hint="set K8S_RUNBOOKS_SLACK_BOT_TOKEN")
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.budget_seconds = budget_seconds

    # ------------------------------------------------------------------------------ methods
    def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """chat.postMessage; the answer holds `channel` and `ts` (the message's id for chat.update)."""
        return self.call("chat.postMessage", {"channel": channel, "text": text, **({"blocks": blocks} if blocks else {})})

    def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """chat.update of a message the bot posted (`blocks=[]` would remove them: None keeps the text only)."""
        body: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            body["blocks"] = blocks
        return self.call("chat.update", body)

    def post_ephemeral(self, channel: str, user: str, text: str) -> dict[str, Any]:
        """chat.postEphemeral: a message only `user` sees."""
        return self.call("chat.postEphemeral", {"channel": channel, "user": user, "text": text})

    def usergroup_members(self, usergroup: str) -> list[str]:
        """usergroups.users.list: the user ids of a user group (a read method: form-encoded, not JSON)."""
        answer = self.call("usergroups.users.list", {"usergroup": usergroup}, form=True)
        users = answer.get("users")
        return [str(u) for u in users] if isinstance(users, list) else []

    # ------------------------------------------------------------------------------ transport
    def call(self, method: str, body: dict[str, Any], *, form: bool = False) -> dict[str, Any]:
        """One Web API method; raises TransientError (after retries), Forbidden, NotFound or PermanentError."""
        deadline = time.monotonic() + self.budget_seconds
        last: TransientError | None = None
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(self.attempts):
                if last is not None:
                    delay = last.retry_after if last.retry_after is not None else 0.5 * 2 ** (attempt - 1)
                    if time.monotonic() + delay > deadline:
                        break
                    time.sleep(delay)
                try:
                    return self._once(client, method, body, form)
                except TransientError as exc:
                    last = exc
                    log.info("Slack %s attempt %d/%d failed: %s", method, attempt + 1, self.attempts, exc.message)
        assert last is not None
        raise last

    def _once(self, client: httpx.Client, method: str, body: dict[str, Any], form: bool) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}"}
        url = f"{self.api_url}/{method}"
        try:
            if form:
                response = client.post(url, data=body, headers=headers)
            else:
                response = client.post(url, json=body, headers={**headers, "Content-Type": "application/json; charset=utf-8"})
        except httpx.TimeoutException:
            raise TransientError(f"Slack {method} did not answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach Slack for {method} ({type(exc).__name__})") from None
        if response.status_code == 429:
            raw = response.headers.get("Retry-After", "")
            retry_after = min(float(raw), MAX_RETRY_AFTER_S) if raw.isdigit() else 1.0
            raise TransientError(f"Slack {method} was rate limited (HTTP 429, Retry-After {raw or '-'})", retry_after=retry_after)
        if response.status_code >= 500 or response.status_code == 408:
            raise TransientError(f"Slack {method} failed with HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise PermanentError(f"Slack {method} answered HTTP {response.status_code} with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise PermanentError(f"Slack {method} answered with {type(answer).__name__}, not an object")
        if answer.get("ok") is True:
            return answer
        error = str(answer.get("error") or f"HTTP {response.status_code}")
        message = f"Slack {method} refused: {error}"
        hint = _HINTS.get(error)
        if error in _TRANSIENT:
            raise TransientError(message, hint=hint)
        if error in _AUTH_ERRORS:
            raise Forbidden(message, hint=hint or "check the bot token and the app's scopes")
        if error in _NOT_FOUND:
            raise NotFound(message, hint=hint)
        raise PermanentError(message, hint=hint)
