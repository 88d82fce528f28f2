"""The Slack Web API methods k8s-runbooks calls, and interaction requests as Slack sends them.

Web API shapes as documented: `Authorization: Bearer <token>` (else `not_authed` / `invalid_auth`), JSON bodies for
chat.* (`Content-Type: application/json`, else `invalid_form_data`), form bodies for usergroups.users.list, HTTP 200
with `{"ok": false, "error": ...}` for refusals, HTTP 429 with `Retry-After` while rate limited (a knob).

`SlackWebAPI.handle(method, path, headers, body)` answers one request; whoever serves it (the sandbox component,
the tests' in-thread server) owns the socket. `on_change` is called after every change (the sandbox persists then).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

Answer = tuple[int, dict[str, str], bytes]
TEAM = {"id": "T0LOCAL", "domain": "k8s-runbooks-sandbox"}
APP_ID = "A0LOCAL"


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)  # every chat.update body, with `at` (Unix time)
    at: float = 0.0
    posted_text: str | None = None  # as posted (`text` and `blocks` are the latest)
    posted_blocks: list[dict[str, Any]] | None = None


@dataclass
class Knobs:
    """Misbehaviour on demand: the next `rate_limit_next` calls get 429 with `Retry-After: retry_after`; every call
    is answered `delay_seconds` late; `fail_with` answers every call `{"ok": false, "error": fail_with}`."""

    rate_limit_next: int = 0
    retry_after: int = 1
    delay_seconds: float = 0.0
    fail_with: str | None = None


class SlackWebAPI:
    def __init__(self, token: str, channels: set[str] | dict[str, str], groups: dict[str, list[str]] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.token = token
        self.channels: dict[str, str] = dict(channels) if isinstance(channels, dict) else {c: c.lower() for c in channels}
        self.groups = dict(groups or {})
        self.users = dict(users or {})  # user id -> user name (who may press buttons)
        self.messages: dict[str, Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.knobs = Knobs()
        self.on_change: Callable[[], None] | None = None
        self._seq = 0
        self._mlock = threading.RLock()

    # knobs as plain attributes too (the tests set them directly)
    rate_limit_next = property(lambda self: self.knobs.rate_limit_next,
                               lambda self, v: setattr(self.knobs, "rate_limit_next", v))
    delay_seconds = property(lambda self: self.knobs.delay_seconds, lambda self, v: setattr(self.knobs, "delay_seconds", v))
    fail_with = property(lambda self: self.knobs.fail_with, lambda self, v: setattr(self.knobs, "fail_with", v))

    # ------------------------------------------------------------------ Web API
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """One Web API request at `/api/<method>` (headers lower-case)."""
        if self.knobs.delay_seconds:
            time.sleep(self.knobs.delay_seconds)
        api = path.split("?", 1)[0].removeprefix("/api/")
        with self._mlock:
            if self.knobs.rate_limit_next > 0:
                self.knobs.rate_limit_next -= 1
                return 429, {"Retry-After": str(self.knobs.retry_after), "Content-Type": "application/json"}, \
                    b'{"ok": false, "error": "ratelimited"}'
        if api == "api.test":  # no token needed, as on Slack
            return self._answer({"ok": True})
        auth = headers.get("authorization", "")
        if not auth:
            return self._answer({"ok": False, "error": "not_authed"})
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            return self._answer({"ok": False, "error": "invalid_auth"})
        if self.knobs.fail_with:
            return self._answer({"ok": False, "error": self.knobs.fail_with})
        if api == "usergroups.users.list":
            form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
            group = form.get("usergroup", "")
            if group not in self.groups:
                return self._answer({"ok": False, "error": "no_such_subteam"})
            return self._answer({"ok": True, "users": self.groups[group]})
        if not headers.get("content-type", "").startswith("application/json"):
            return self._answer({"ok": False, "error": "invalid_form_data"})
        try:
            data = json.loads(body)
        except ValueError:
            return self._answer({"ok": False, "error": "invalid_json"})
        if not isinstance(data, dict):
            return self._answer({"ok": False, "error": "invalid_json"})
        if api == "chat.postMessage":
            return self._post(data)
        if api == "chat.update":
            return self._update(data)
        if api == "chat.postEphemeral":
            return self._ephemeral(data)
        return self._answer({"ok": False, "error": "unknown_method"})

    @staticmethod
    def _answer(obj: dict[str, Any]) -> Answer:
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(obj).encode()

    def _next_ts(self) -> str:
        with self._mlock:
            self._seq += 1
            return f"{int(time.time())}.{self._seq:06d}"

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _post(self, data: dict[str, Any]) -> Answer:
        channel = data.get("channel")
        if channel not in self.channels:
            return self._answer({"ok": False, "error": "channel_not_found"})
        if not data.get("text") and not data.get("blocks"):
            return self._answer({"ok": False, "error": "no_text"})
        with self._mlock:
            ts = self._next_ts()
            blocks = list(data.get("blocks") or [])
            msg = Message(str(channel), ts, str(data.get("text", "")), blocks, data.get("thread_ts"), at=time.time(),
                          posted_text=str(data.get("text", "")), posted_blocks=blocks)
            self.messages[ts] = msg
            self._changed()
        return self._answer({"ok": True, "channel": channel, "ts": ts, "message": {"text": msg.text, "blocks": msg.blocks}})

    def _update(self, data: dict[str, Any]) -> Answer:
        with self._mlock:
            msg = self.messages.get(str(data.get("ts")))
            if msg is None or msg.channel != data.get("channel"):
                return self._answer({"ok": False, "error": "message_not_found"})
            msg.updates.append({**data, "at": time.time()})
            msg.text = str(data.get("text", msg.text))
            if "blocks" in data:
                msg.blocks = list(data["blocks"] or [])
            self._changed()
        return self._answer({"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text})

    def _ephemeral(self, data: dict[str, Any]) -> Answer:
        if data.get("channel") not in self.channels:
            return self._answer({"ok": False, "error": "channel_not_found"})
        if self.users and data.get("user") not in self.users:
            return self._answer({"ok": False, "error": "user_not_in_channel"})
        with self._mlock:
            ts = self._next_ts()
            self.ephemerals.append({**data, "message_ts": ts, "at": time.time()})
            self._changed()
        return self._answer({"ok": True, "message_ts": ts})

    # ------------------------------------------------------------------ what people and tests look at
    def posted(self, channel: str | None = None) -> list[Message]:
        return [m for m in self.messages.values() if channel is None or m.channel == channel]

    def approval_message(self) -> Message | None:
        return next((m for m in self.messages.values() if message_buttons(m)), None)

    @staticmethod
    def buttons(msg: Message) -> dict[str, str]:
        return message_buttons(msg)

    # ------------------------------------------------------------------ state on disk
    def to_dict(self) -> dict[str, Any]:
        with self._mlock:
            return {"seq": self._seq, "channels": self.channels, "groups": self.groups, "users": self.users,
                    "messages": [asdict(m) for m in self.messages.values()], "ephemerals": list(self.ephemerals)}

    def load_dict(self, data: dict[str, Any]) -> None:
        """What an earlier run of the local Slack received (the workspace's channels, users and groups stay ours)."""
        with self._mlock:
            self._seq = int(data.get("seq", 0))
            self.messages = {m["ts"]: Message(**m) for m in data.get("messages", [])}
            self.ephemerals = list(data.get("ephemerals", []))


def message_buttons(msg: Message) -> dict[str, str]:
    """action_id -> value of every button the message shows now (link buttons have no value: left out)."""
    return {el["action_id"]: el["value"] for _, el in _button_elements(msg.blocks) if "value" in el}


def _button_elements(blocks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        elements = [block["accessory"]] if isinstance(block.get("accessory"), dict) else block.get("elements", [])
        for el in elements if isinstance(elements, list) else []:
            if isinstance(el, dict) and el.get("type") == "button" and "action_id" in el:
                out.append((str(block.get("block_id", "")), el))
    return out


# ---------------------------------------------------------------------- interactions, as Slack sends them
def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request: `X-Slack-Signature: v0=` hex HMAC-SHA256 of `v0:{ts}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}


def interaction_payload(msg: Message, action_id: str, user: str, username: str, *, value: str | None = None,
                        channel_name: str = "", response_url: str = "") -> dict[str, Any]:
    """The `block_actions` payload Slack sends when `user` presses the button `action_id` of `msg`."""
    found = next(((bid, el) for bid, el in _button_elements(msg.blocks) if el["action_id"] == action_id), None)
    block_id, element = found if found is not None else ("", {"type": "button", "action_id": action_id})
    now = time.time()
    action = {"action_id": action_id, "block_id": block_id, "text": element.get("text", {"type": "plain_text", "text": action_id}),
              "value": element.get("value", "") if value is None else value, "type": "button", "action_ts": f"{now:.6f}"}
    if "style" in element:
        action["style"] = element["style"]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": username, "name": username, "team_id": TEAM["id"]},
        "api_app_id": APP_ID, "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel, "is_ephemeral": False},
        "trigger_id": f"{time.time_ns()}.{TEAM['id']}.local", "team": dict(TEAM), "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": msg.channel, "name": channel_name or msg.channel.lower()},
        "message": {"type": "message", "subtype": "bot_message", "ts": msg.ts, "text": msg.text, "blocks": msg.blocks,
                    **({"thread_ts": msg.thread_ts} if msg.thread_ts else {})},
        "state": {"values": {}}, "response_url": response_url or f"http://127.0.0.1/actions/{TEAM['id']}/1/local",
        "actions": [action],
    }


def press_request(msg: Message, action_id: str, user: str, username: str, secret: str, *, value: str | None = None,
                  timestamp: int | None = None, channel_name: str = "", response_url: str = "") -> tuple[bytes, dict[str, str]]:
    """The form-encoded, signed request body and headers of a button press (`payload=<JSON>`, as Slack posts it)."""
    payload = interaction_payload(msg, action_id, user, username, value=value, channel_name=channel_name,
                                  response_url=response_url)
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return body, sign(body, secret, timestamp)
