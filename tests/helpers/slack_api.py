"""A local Slack: the Web API methods k8s-runbooks uses, and interaction requests signed as Slack signs them.

    with LocalSlack(token="xoxb-test", signing_secret="s3cret", channels={"C0APPROVE"}) as slack:
        ...  # point K8S_RUNBOOKS_SLACK_API_URL at slack.api_url
        body, headers = slack.press(message_ts, "approve:rollout_undo", user="U0ALICE", username="alice")

Web API shapes as documented: `Authorization: Bearer <token>` (else `not_authed` / `invalid_auth`), JSON bodies
for chat.* (`Content-Type: application/json`), form bodies for usergroups.users.list, HTTP 200 with
`{"ok": false, "error": ...}` for refusals, HTTP 429 with `Retry-After` when rate limited (scripted).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from tests.helpers.http_receiver import LocalHTTPServer


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)


class LocalSlack(LocalHTTPServer):
    def __init__(self, token: str, signing_secret: str, channels: set[str], groups: dict[str, list[str]] | None = None) -> None:
        self.token, self.signing_secret, self.channels = token, signing_secret, set(channels)
        self.groups = dict(groups or {})
        self.messages: dict[str, Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.rate_limit_next = 0  # answer this many calls with 429 Retry-After: 1
        self.delay_seconds = 0.0  # answer every call this much later (a slow Slack)
        self.fail_with: str | None = None  # answer every call {"ok": false, "error": fail_with}
        self._seq = 0
        self._mlock = threading.Lock()
        super().__init__(self._handle)
        self.api_url = f"{self.base_url}/api"

    # ------------------------------------------------------------------ Web API
    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        api = path.split("?", 1)[0].removeprefix("/api/")
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return 429, {"Retry-After": "1", "Content-Type": "application/json"}, b'{"ok": false, "error": "ratelimited"}'
        auth = headers.get("authorization", "")
        if not auth:
            return self._answer({"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.token}":
            return self._answer({"ok": False, "error": "invalid_auth"})
        if self.fail_with:
            return self._answer({"ok": False, "error": self.fail_with})
        ctype = headers.get("content-type", "")
        if api == "usergroups.users.list":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            group = form.get("usergroup", "")
            if group not in self.groups:
                return self._answer({"ok": False, "error": "no_such_subteam"})
            return self._answer({"ok": True, "users": self.groups[group]})
        if not ctype.startswith("application/json"):
            return self._answer({"ok": False, "error": "invalid_form_data"})
        data = json.loads(body)
        if api == "chat.postMessage":
            return self._post(data)
        if api == "chat.update":
            return self._update(data)
        if api == "chat.postEphemeral":
            if data.get("channel") not in self.channels:
                return self._answer({"ok": False, "error": "channel_not_found"})
            self.ephemerals.append(data)
            return self._answer({"ok": True, "message_ts": self._next_ts()})
        return self._answer({"ok": False, "error": "unknown_method"})

    def _answer(self, obj: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(obj).encode()

    def _next_ts(self) -> str:
        with self._mlock:
            self._seq += 1
            return f"{int(time.time())}.{self._seq:06d}"

    def _post(self, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        channel = data.get("channel")
        if channel not in self.channels:
            return self._answer({"ok": False, "error": "channel_not_found"})
        if not data.get("text") and not data.get("blocks"):
            return self._answer({"ok": False, "error": "no_text"})
        ts = self._next_ts()
        msg = Message(channel, ts, data.get("text", ""), data.get("blocks") or [], data.get("thread_ts"))
        self.messages[ts] = msg
        return self._answer({"ok": True, "channel": channel, "ts": ts, "message": {"text": msg.text, "blocks": msg.blocks}})

    def _update(self, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        msg = self.messages.get(str(data.get("ts")))
        if msg is None or msg.channel != data.get("channel"):
            return self._answer({"ok": False, "error": "message_not_found"})
        msg.updates.append(data)
        msg.text = data.get("text", msg.text)
        if "blocks" in data:
            msg.blocks = data["blocks"]
        return self._answer({"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text})

    # ------------------------------------------------------------------ what tests look at
    def posted(self, channel: str | None = None) -> list[Message]:
        return [m for m in self.messages.values() if channel is None or m.channel == channel]

    def approval_message(self) -> Message | None:
        return next((m for m in self.messages.values() if self.buttons(m)), None)

    @staticmethod
    def buttons(msg: Message) -> dict[str, str]:
        """action_id -> value of every button of the message's original blocks."""
        out: dict[str, str] = {}
        for block in msg.blocks:
            elements = [block["accessory"]] if isinstance(block.get("accessory"), dict) else block.get("elements", [])
            for el in elements:
                if el.get("type") == "button" and "value" in el:
                    out[el["action_id"]] = el["value"]
        return out

    # ------------------------------------------------------------------ interactions, as Slack sends them
    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = f"v0:{ts}:".encode() + body
        sig = "v0=" + hmac.new((secret or self.signing_secret).encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                "Content-Type": "application/x-www-form-urlencoded"}

    def press(self, msg: Message, action_id: str, user: str, username: str, *, value: str | None = None,
              timestamp: int | None = None, secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A block_actions interaction for a button of `msg`, form-encoded and signed."""
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": username, "name": username, "team_id": "T0LOCAL"},
            "api_app_id": "A0LOCAL", "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel, "is_ephemeral": False},
            "trigger_id": f"{time.time_ns()}.local", "team": {"id": "T0LOCAL", "domain": "local"},
            "channel": {"id": msg.channel, "name": "approvals"},
            "message": {"type": "message", "ts": msg.ts, "text": msg.text, "blocks": msg.blocks},
            "response_url": f"{self.base_url}/actions/T0LOCAL/1/x",
            "actions": [{"action_id": action_id, "block_id": "b", "type": "button",
                         "value": self.buttons(msg)[action_id] if value is None else value,
                         "action_ts": f"{time.time():.6f}"}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return body, self.sign(body, timestamp, secret)
