"""A person pressing a button in the local Slack: the interaction request Slack would send for it, signed with the
app's signing secret and posted to the receiver's `/v1/slack/interactions`; then what Slack shows afterwards
(the message updated, an ephemeral answer). `forge`, `stale` and `replay` send what an attacker could, to show
the receiver's refusals.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from k8s_runbooks.sandbox.localchat import workspace
from k8s_runbooks.sandbox.localchat.slack import Message, message_buttons, press_request

LAST_PRESS = "localchat/last-press.json"
STALE_BY_SECONDS = 360  # Slack's (and the receiver's) limit is 5 minutes
HTTP_TIMEOUT_S = 10.0
Tamper = Literal["forge", "stale", "replay"]


@dataclass
class PressResult:
    status: int  # the receiver's HTTP status
    detail: str  # its error detail (401 ...), or "" when it took the press
    message: Message
    user: str
    username: str
    action_id: str
    answers: list[str] = field(default_factory=list)  # what Slack shows afterwards (updates, ephemeral answers)


def messages(state: dict[str, Any]) -> list[Message]:
    return [Message(**m) for m in state.get("slack", {}).get("messages", [])]


def pick_message(state: dict[str, Any], ts: str | None) -> Message:
    """The message `ts`, else the newest one with approval buttons."""
    msgs = messages(state)
    if ts is not None:
        msg = next((m for m in msgs if m.ts == ts), None)
        if msg is None:
            raise workspace.WorkspaceError(f"no message {ts} in the local Slack; list them with `k8s-runbooks sandbox slack messages`")
        if not message_buttons(msg):
            raise workspace.WorkspaceError(f"message {ts} has no buttons left (its approval is closed: {msg.text[:200]})")
        return msg
    open_ = [m for m in msgs if any(a == "reject" or a.startswith("approve:") for a in message_buttons(m))]
    if not open_:
        raise workspace.WorkspaceError(
            "no open approval message in the local Slack (no paused run has posted one, or every one was answered)",
            hint="start a run that waits for approval: k8s-runbooks run pod-crash -n shop -d checkout --approval required --submit")
    return max(open_, key=lambda m: (m.at, m.ts))


def pick_user(state: dict[str, Any], user: str) -> tuple[str, str]:
    """(id, name) of a workspace member given by id (U0ALICE) or name (alice)."""
    users: dict[str, str] = state.get("slack", {}).get("users") or workspace.USERS
    wanted = user.strip().lstrip("@")
    for uid, name in users.items():
        if wanted.upper() == uid or wanted.lower() == name.lower():
            return uid, name
    known = ", ".join(f"{uid} ({name})" for uid, name in users.items())
    raise workspace.WorkspaceError(f"no user {user!r} in the local Slack workspace; its members: {known}")


def pick_action(msg: Message, action: str) -> str:
    """The button's action id: `approve` (the first, best-supported action), `reject`, an action id, or an action kind."""
    ids = list(message_buttons(msg))
    approve = [a for a in ids if a.startswith("approve:")]
    chosen = approve[0] if action == "approve" and approve else action if action in ids else f"approve:{action}"
    if chosen not in ids:
        raise workspace.WorkspaceError(f"message {msg.ts} has no button {action!r}; its buttons: {', '.join(ids) or 'none'}")
    return chosen


def press(state_dir: Path, receiver_url: str, user: str | None, action: str | None, ts: str | None = None,
          tamper: Tamper | None = None, wait_s: float = 15.0) -> PressResult:
    """Press a button as `user` (or send a forged, stale or replayed press) and wait for what Slack shows then."""
    state_dir = Path(state_dir).resolve()
    values = workspace.read_secrets(state_dir)
    state = workspace.read_state(state_dir)
    if tamper == "replay":
        body, headers, info = _last_press(state_dir)
        msg = next((m for m in messages(state) if m.ts == info["ts"]), None) or Message(info["channel"], info["ts"], "", [])
        uid, name, action_id = info["user"], info["username"], info["action_id"]
    else:
        if not user or not action:
            raise workspace.WorkspaceError("say who presses which button: --user U0ALICE --action approve (or --replay)")
        msg = pick_message(state, ts)
        uid, name = pick_user(state, user)
        action_id = pick_action(msg, action)
        secret = secrets.token_hex(32) if tamper == "forge" else values[workspace.SIGNING_SECRET]
        stamp = int(time.time()) - STALE_BY_SECONDS if tamper == "stale" else None
        channel_name = state.get("slack", {}).get("channels", {}).get(msg.channel, "")
        body, headers = press_request(msg, action_id, uid, name, secret, timestamp=stamp, channel_name=channel_name)
    started = time.time()
    url = receiver_url.rstrip("/") + "/v1/slack/interactions"
    try:
        resp = httpx.post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise workspace.WorkspaceError(f"cannot reach the receiver at {url} ({type(exc).__name__})",
                                       hint="is the sandbox up? k8s-runbooks sandbox status") from None
    if tamper is None:  # what --replay sends again
        _save_last_press(state_dir, body, headers, {"ts": msg.ts, "channel": msg.channel, "user": uid, "username": name,
                                                     "action_id": action_id})
    detail = "" if resp.status_code == 200 else _detail(resp)
    result = PressResult(resp.status_code, detail, msg, uid, name, action_id)
    if resp.status_code == 200:
        result.answers = wait_for_answers(state_dir, msg, uid, started, wait_s)
    return result


def wait_for_answers(state_dir: Path, msg: Message, user: str, since: float, wait_s: float) -> list[str]:
    """Updates of `msg` and ephemeral answers to `user` that arrive after `since` (the receiver decides a press off
    its request path, so they come a moment after its 200)."""
    deadline, found, settle = time.monotonic() + wait_s, [], None
    while time.monotonic() < deadline:
        state = workspace.read_state(state_dir)
        found = [f"(only you can see this) {e.get('text', '')}" for e in state.get("slack", {}).get("ephemerals", [])
                 if e.get("user") == user and float(e.get("at", 0)) >= since]
        now_msg = next((m for m in messages(state) if m.ts == msg.ts), None)
        if now_msg is not None:
            found += [f"message updated: {u.get('text', '')}" for u in now_msg.updates if float(u.get("at", 0)) >= since]
        if found:
            settle = settle or time.monotonic() + 1.0  # an update and an ephemeral may both come: wait a moment for both
            if time.monotonic() >= settle:
                break
        time.sleep(0.25)
    return found


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    return str(data.get("detail") or data.get("error") or data)[:300] if isinstance(data, dict) else str(data)[:300]


def _save_last_press(state_dir: Path, body: bytes, headers: dict[str, str], info: dict[str, str]) -> None:
    path = state_dir / LAST_PRESS
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"body": body.decode(), "headers": headers, **info}, out)


def _last_press(state_dir: Path) -> tuple[bytes, dict[str, str], dict[str, str]]:
    path = state_dir / LAST_PRESS
    try:
        data = json.loads(path.read_text())
        return data.pop("body").encode(), data.pop("headers"), data
    except FileNotFoundError:
        raise workspace.WorkspaceError("no press to replay yet: press a button first (k8s-runbooks sandbox slack press ...)") from None
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise workspace.WorkspaceError(f"{path} is unreadable ({exc}); press a button again") from None
