"""`k8s-runbooks sandbox slack ...` and `k8s-runbooks sandbox pagerduty ...`: the sandbox's local Slack and PagerDuty
from the keyboard: what was posted, a button press as a person (or an attacker) would send it, the pages."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from k8s_runbooks.sandbox import supervisor
from k8s_runbooks.sandbox.localchat import press as presses
from k8s_runbooks.sandbox.localchat import workspace
from k8s_runbooks.sandbox.localchat.component import base_url
from k8s_runbooks.sandbox.localchat.slack import Message, message_buttons
from k8s_runbooks.sandbox.settings import SandboxSettings

console = Console(width=None if sys.stdout.isatty() else 160)
slack_app = typer.Typer(help="The sandbox's local Slack: approval messages and button presses.", no_args_is_help=True)
pagerduty_app = typer.Typer(help="The sandbox's local PagerDuty: pages and their state.", no_args_is_help=True)
StateDir = Annotated[Optional[Path], typer.Option("--state-dir", help="State directory (default: K8S_RUNBOOKS_SANDBOX_STATE_DIR, .sandbox).")]


def _cfg(state_dir: Path | None) -> supervisor.SandboxConfig:
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    if not cfg.ports.chatops or not workspace.secrets_path(cfg.state_dir).exists():
        raise workspace.WorkspaceError(f"the sandbox in {cfg.state_dir} has no local Slack/PagerDuty",
                                       hint="start it with `k8s-runbooks sandbox up` (with Prefect: the component `chatops`)")
    return cfg


def _clock(at: Any) -> str:
    return datetime.fromtimestamp(float(at or 0)).strftime("%H:%M:%S")


def _out(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _events(state: dict[str, Any], channel: str | None, full: bool) -> list[tuple[float, str, str]]:
    """(time, key, text) of every post, update and ephemeral answer, oldest first; the key identifies it for --follow."""
    slack = state.get("slack", {})
    names: dict[str, str] = slack.get("channels", {})
    users: dict[str, str] = slack.get("users", {})
    wanted = None if channel is None else next((cid for cid, n in names.items() if channel.lstrip("#") in (cid, n)), channel)
    out: list[tuple[float, str, str]] = []
    for msg in presses.messages(state):
        if wanted is not None and msg.channel != wanted:
            continue
        where = f"#{names.get(msg.channel, msg.channel)}"
        reply = f" (reply in thread {msg.thread_ts})" if msg.thread_ts else ""
        posted = msg.posted_blocks if msg.posted_blocks is not None else msg.blocks
        text = msg.posted_text if msg.posted_text is not None else msg.text
        lines = [f"{_clock(msg.at)} {where} message {msg.ts}{reply}: {text}"]
        if full:
            lines += [f"    | {line}" for block in posted for line in _block_text(block).splitlines()]
        ids = message_buttons(Message(msg.channel, msg.ts, "", posted))
        if ids:
            lines.append("    buttons: " + "  ".join(f"[{aid}]" for aid in ids))
        out.append((msg.at, f"post {msg.ts}", "\n".join(lines)))
        for i, update in enumerate(msg.updates):
            tail = ""
            if "blocks" in update:
                left = message_buttons(Message(msg.channel, msg.ts, "", update.get("blocks") or []))
                tail = "  (buttons left: " + ", ".join(left) + ")" if left else "  (buttons removed)"
            out.append((float(update.get("at", 0)), f"update {msg.ts} {i}",
                        f"{_clock(update.get('at'))} {where} message {msg.ts} updated: {update.get('text', '')}{tail}"))
    for i, eph in enumerate(slack.get("ephemerals", [])):
        if wanted is not None and eph.get("channel") != wanted:
            continue
        who = f"{users.get(eph.get('user', ''), '?')} ({eph.get('user')})"
        out.append((float(eph.get("at", 0)), f"ephemeral {i}",
                    f"{_clock(eph.get('at'))} #{names.get(eph.get('channel', ''), eph.get('channel'))} ephemeral to {who}: "
                    f"{eph.get('text', '')}"))
    return sorted(out, key=lambda e: e[0])


def _block_text(block: dict[str, Any]) -> str:
    text = block.get("text")
    if isinstance(text, dict):
        return str(text.get("text", ""))
    if block.get("type") == "context":
        return " · ".join(str(e.get("text", "")) for e in block.get("elements", []) if isinstance(e, dict))
    return ""


def show_press(result: presses.PressResult, tamper: str | None) -> bool:
    """Print a press and what followed; False when the outcome is wrong (a tampered press taken, a press refused)."""
    what = f"{result.username} ({result.user}) pressed [{result.action_id}] on message {result.message.ts}"
    if tamper:
        what += {"forge": " (forged: signed with a wrong secret)", "stale": " (signed 6 minutes ago)",
                 "replay": " (the same signed request again)"}[tamper]
    _out(what)
    if result.status == 200:
        _out("receiver: 200, press accepted for a decision")
        for line in result.answers:
            _out(f"  slack: {line}")
        if not result.answers:
            _out("  slack: nothing yet (see `k8s-runbooks sandbox slack messages --follow`)")
    else:
        _out(f"receiver: {result.status} {result.detail}")
    if tamper is not None and result.status == 200:
        _out(f"the receiver ACCEPTED a {tamper} press: it must refuse it")
        return False
    return tamper is not None or result.status == 200


@slack_app.command("messages")
def messages_cmd(
    channel: Annotated[Optional[str], typer.Option("--channel", "-c", help="Only this channel (id, name or #name).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what arrives (Ctrl-C stops).")] = False,
    full: Annotated[bool, typer.Option("--full", help="Also the text of each message's blocks (evidence, plan).")] = False,
    state_dir: StateDir = None,
) -> None:
    """What the runbooks posted: messages with their buttons (action ids), updates, thread replies, ephemeral answers."""
    cfg = _cfg(state_dir)
    shown: set[str] = set()
    events = _events(workspace.read_state(cfg.state_dir), channel, full)
    if not events and not follow:
        _out(f"nothing posted in the local Slack yet ({workspace.state_path(cfg.state_dir)})")
    while True:
        for _, key, text in events:
            if key not in shown:
                _out(text)
                shown.add(key)
        if not follow:
            return
        time.sleep(1.0)
        events = _events(workspace.read_state(cfg.state_dir), channel, full)


@slack_app.command("press")
def press_cmd(
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="Who presses: U0ALICE, U0BOB, U0MALLORY (or alice, bob, mallory).")] = None,
    action: Annotated[Optional[str], typer.Option("--action", "-a", help="approve (the first, best-supported action), reject, "
                                                                          "or a button's action id (approve:rollout_undo).")] = None,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="The message's ts (default: the newest open approval).")] = None,
    forge: Annotated[bool, typer.Option("--forge", help="Sign with a wrong secret (an attacker's press): the receiver must refuse it.")] = False,
    stale: Annotated[bool, typer.Option("--stale", help="A correctly signed press from 6 minutes ago: refused as stale.")] = False,
    replay: Annotated[bool, typer.Option("--replay", help="Send the last press again, byte for byte: refused as replayed.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Press a button of an approval message as a Slack user: the interaction payload Slack sends, signed with the
    app's signing secret (v0= HMAC-SHA256 of v0:timestamp:body), posted to the receiver; then what Slack shows."""
    cfg = _cfg(state_dir)
    chosen = [name for name, on in (("forge", forge), ("stale", stale), ("replay", replay)) if on]
    if len(chosen) > 1:
        raise workspace.WorkspaceError("--forge, --stale and --replay are different attacks: use one at a time")
    tamper = chosen[0] if chosen else None
    receiver = f"http://127.0.0.1:{cfg.ports.receiver}"
    result = presses.press(cfg.state_dir, receiver, user, action, message, tamper)  # type: ignore[arg-type]
    if not show_press(result, tamper):
        raise typer.Exit(1)


@slack_app.command("knobs")
def knobs_cmd(
    rate_limit: Annotated[Optional[int], typer.Option("--rate-limit", min=0, help="Answer the next N Web API calls 429.")] = None,
    retry_after: Annotated[Optional[int], typer.Option("--retry-after", min=0, help="The Retry-After of those 429s, seconds.")] = None,
    delay: Annotated[Optional[float], typer.Option("--delay", min=0, help="Answer every call this many seconds late.")] = None,
    fail_with: Annotated[Optional[str], typer.Option("--fail-with", help="Answer every call {ok: false, error: ERROR}; '' stops.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Make the local Slack misbehave (rate limits with Retry-After, slowness, errors) or show how it behaves now."""
    cfg = _cfg(state_dir)
    change: dict[str, Any] = {k: v for k, v in (("rate_limit_next", rate_limit), ("retry_after", retry_after),
                                                ("delay_seconds", delay)) if v is not None}
    if fail_with is not None:
        change["fail_with"] = fail_with or None
    url = f"{base_url(cfg.ports.chatops)}/_sandbox/knobs"
    try:
        resp = httpx.post(url, json=change, timeout=5) if change else httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        raise workspace.WorkspaceError(f"cannot reach the local Slack at {url} ({type(exc).__name__})",
                                       hint="is the sandbox up? k8s-runbooks sandbox status") from None
    if resp.status_code != 200:
        raise workspace.WorkspaceError(f"the local Slack refused the knobs: {resp.text[:300]}")
    _out(" ".join(f"{k}={v}" for k, v in resp.json()["knobs"].items()))


@pagerduty_app.command("incidents")
def incidents_cmd(state_dir: StateDir = None) -> None:
    """The pages: one per dedup key (one per incident), triggered, acknowledged or resolved."""
    cfg = _cfg(state_dir)
    incidents = workspace.read_state(cfg.state_dir).get("pagerduty", {}).get("incidents", [])
    if not incidents:
        _out("no pages yet")
        return
    table = Table("dedup key", "service", "status", "severity", "summary", "triggered", "resolved", title="local PagerDuty",
                  title_justify="left")
    colour = {"triggered": "red", "acknowledged": "yellow", "resolved": "green"}
    for inc in sorted(incidents, key=lambda i: i.get("triggered_at", 0)):
        table.add_row(inc["dedup_key"], inc.get("service", ""), f"[{colour.get(inc.get('status', ''), 'white')}]{inc.get('status')}[/]",
                      inc.get("severity", ""), inc.get("summary", ""), _clock(inc.get("triggered_at")),
                      _clock(inc["resolved_at"]) if inc.get("resolved_at") else "-")
    console.print(table)
