"""The approval desk: what the receiver does with a Slack button press.

On the request path (`accept`): the Slack signature and timestamp (401 otherwise), replay protection (the
same signed request twice is a 401), the form-encoded `payload`, then the press is queued and Slack gets its
200 at once. Off the request path (`process`, one worker thread, so votes are counted in order): the run must
be paused for this very approval and not expired, the presser must be on the approver allowlist of the run's
policy, an action above the two-person threshold waits for a second distinct approver; then the run is
resumed through its own typed form with the verified approver and an attestation, and the message updated.
Every press, accepted or refused, is recorded on the run (a flow run input `chatops-press-*`) and logged;
a refused presser gets an ephemeral answer.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from k8s_runbooks.errors import AuthError
from k8s_runbooks.chatops import blocks
from k8s_runbooks.chatops.attest import Approver, Attested, attest
from k8s_runbooks.chatops.policy import Policies, Policy
from k8s_runbooks.chatops.signature import MAX_AGE_SECONDS, verify_slack_request
from k8s_runbooks.chatops.slack import SlackClient
from k8s_runbooks.errors import RunbookError

log = logging.getLogger("k8s_runbooks.chatops")
PRESS_KEY_PREFIX = "chatops-press-"
GROUP_CACHE_S = 60.0
MAX_QUEUE = 1000


class BadInteraction(Exception):
    """A signed request the desk cannot use: rendered as a JSON 4xx."""

    def __init__(self, status: int, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class RunView:
    id: str
    state: str  # Prefect state type: PAUSED, RUNNING, COMPLETED, ...
    pause_key: str | None
    pause_expires: float | None  # Unix time
    namespace: str
    route: str | None
    has_form: bool


class RunControl(Protocol):
    def read(self, run_id: str) -> RunView | None: ...
    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[bool, str]: ...
    def record(self, run_id: str, key: str, value: dict[str, Any]) -> None: ...


class _User(BaseModel):
    id: str = Field(pattern=r"^[A-Z0-9]{2,32}$")
    username: str = Field("", max_length=200)
    name: str = Field("", max_length=200)


class _Action(BaseModel):
    action_id: str = Field(max_length=255)
    value: str = Field("", max_length=2000)


class _Channel(BaseModel):
    id: str = Field(max_length=64)


class _Container(BaseModel):
    message_ts: str = Field("", max_length=64)


class Interaction(BaseModel):
    """The parts of a `block_actions` payload the desk uses."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=64)
    user: _User
    actions: list[_Action] = Field(default_factory=list, max_length=10)
    channel: _Channel | None = None
    container: _Container | None = None
    message: dict[str, Any] | None = None
    trigger_id: str = Field("", max_length=200)


@dataclass(frozen=True)
class Press:
    user: Approver
    action_id: str
    run_id: str
    nonce: str
    action: str | None
    pods: int
    channel: str | None
    ts: str | None
    message_blocks: list[dict[str, Any]]


def parse_press(body: bytes, content_type: str) -> Press | None:
    """The button press in a signed interaction request; None for interactions that are not our buttons."""
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise BadInteraction(415, "unsupported media type", "Slack interactions are application/x-www-form-urlencoded")
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInteraction(400, "malformed form body", type(exc).__name__) from None
    raw = form.get("payload")
    if not raw:
        raise BadInteraction(400, "missing payload", "expected payload=<JSON> as Slack sends it")
    try:
        interaction = Interaction.model_validate_json(raw[0])
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(payload)"
        raise BadInteraction(400, "invalid interaction payload", f"{where}: {first['msg']}") from None
    if interaction.type != "block_actions" or len(interaction.actions) != 1:
        return None
    act = interaction.actions[0]
    if act.action_id != "reject" and not act.action_id.startswith("approve:"):
        return None  # e.g. the "Open run in Prefect" link button
    try:
        value = json.loads(act.value)
        run_id, nonce, action, pods = str(value["r"]), str(value["n"]), value["a"], int(value.get("p", 0))
    except (ValueError, KeyError, TypeError):
        raise BadInteraction(400, "not an approval button", "the button value is not ours") from None
    if action is not None and not isinstance(action, str):
        raise BadInteraction(400, "not an approval button", "the button's action is not text")
    message_blocks = (interaction.message or {}).get("blocks")
    return Press(
        user=Approver(interaction.user.id, interaction.user.username or interaction.user.name),
        action_id=act.action_id, run_id=run_id[:64], nonce=nonce[:64], action=action, pods=max(0, pods),
        channel=interaction.channel.id if interaction.channel else None,
        ts=interaction.container.message_ts if interaction.container else None,
        message_blocks=message_blocks if isinstance(message_blocks, list) else [],
    )


class _Store:
    """SQLite (WAL) beside the alert spool: signatures seen (replay protection) and two-person votes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS seen (signature TEXT PRIMARY KEY, at REAL NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS votes (run TEXT, nonce TEXT, action TEXT, user TEXT, name TEXT,"
                             " at REAL, PRIMARY KEY (run, nonce, action, user))")

    def first_time(self, signature: str, now: float) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM seen WHERE at < ?", (now - 2 * MAX_AGE_SECONDS,))
            cur = self._db.execute("INSERT OR IGNORE INTO seen (signature, at) VALUES (?, ?)", (signature, now))
            return cur.rowcount == 1

    def vote(self, press: Press, now: float) -> list[Approver]:
        """Record the press's vote; the distinct voters for this action of this approval, first first."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?, ?, ?)",
                             (press.run_id, press.nonce, press.action, press.user.id, press.user.name, now))
            rows = self._db.execute("SELECT user, name FROM votes WHERE run = ? AND nonce = ? AND action = ? ORDER BY at",
                                    (press.run_id, press.nonce, press.action)).fetchall()
        return [Approver(u, n) for u, n in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ApprovalDesk:
    def __init__(self, signing_secret: SecretStr | None, policies: Policies, runs: RunControl, store_path: Path, *,
                 slack: SlackClient | None = None, clock: Callable[[], float] = time.time) -> None:
        self.secret = signing_secret
        self.policies = policies
        self.runs = runs
        self.slack = slack
        self.clock = clock
        self._store = _Store(store_path)
        self._queue: queue.Queue[Press | None] = queue.Queue(MAX_QUEUE)
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._thread: threading.Thread | None = None
        self.processed = 0

    # ------------------------------------------------------------------ request path
    def accept(self, headers: Mapping[str, str], body: bytes) -> Press | None:
        """Verify and queue one interaction request (headers lower-case). Raises AuthError (401) or
        BadInteraction (4xx); returns the queued press (None: a signed interaction that is not a press)."""
        now = self.clock()
        signature = headers.get("x-slack-signature")
        verify_slack_request(body, headers.get("x-slack-request-timestamp"), signature, self.secret, now)
        if not self._store.first_time(str(signature).strip(), now):
            raise AuthError("replayed request: this signed request was already received", scheme="Slack-Signature")
        press = parse_press(body, headers.get("content-type", ""))
        if press is not None:
            try:
                self._queue.put_nowait(press)
            except queue.Full:
                raise BadInteraction(429, "too many pending presses", "try again in a few seconds") from None
        return press

    def pending(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ worker
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slack-approvals", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        self._store.close()

    def process_pending(self) -> int:
        """Decide every queued press now, in this thread (shutdown without a worker, tests); returns how many."""
        done = 0
        while True:
            try:
                press = self._queue.get_nowait()
            except queue.Empty:
                return done
            if press is not None:
                self.process(press)
                self.processed += 1
                done += 1

    def _run(self) -> None:
        while (press := self._queue.get()) is not None:
            try:
                self.process(press)
            except Exception:  # noqa: BLE001 - one bad press must not stop the desk
                log.exception("Slack press by %s on run %s could not be processed", press.user.id, press.run_id)
            self.processed += 1

    # ------------------------------------------------------------------ decisions
    def process(self, press: Press) -> str:
        """Decide one press; returns its outcome (`approved`, `rejected`, `vote`, `refused`)."""
        run = self.runs.read(press.run_id)
        if run is None:
            return self._refuse(press, None, "no such flow run")
        if run.state != "PAUSED":
            return self._refuse(press, run, f"this approval is closed (the run is {run.state.lower()})")
        if not run.pause_key or not run.pause_key.startswith(press.nonce + "-"):
            return self._refuse(press, run, "this approval is closed (the run now waits for another approval)")
        if run.pause_expires is not None and self.clock() >= run.pause_expires:
            return self._refuse(press, run, "this approval has expired")
        policy = self.policies.for_run(run.route, run.namespace)
        if policy is None:
            return self._refuse(press, run, f"no approval policy covers namespace {run.namespace}; approve in the Prefect UI")
        allowed, why = self._is_approver(policy, press.user.id)
        if not allowed:
            return self._refuse(press, run, why)
        approvers = [press.user]
        if press.action is not None and policy.needs_two(press.pods):
            voters = self._store.vote(press, self.clock())
            if len(voters) < 2:
                names = ", ".join(v.name or v.id for v in voters)
                self._record(press, run, "vote", f"1 of 2 approvals for {press.action}")
                self._ephemeral(press, f"Your approval of {press.action} is recorded; it touches {press.pods} pods, so a "
                                       "second approver is needed.")
                self._update(press, f":hourglass: 1 of 2 approvals for `{press.action}`: {blocks.esc(names)}", close=False)
                return "vote"
            approvers = voters[:2]
        return self._resume(press, run, approvers)

    def _resume(self, press: Press, run: RunView, approvers: list[Approver]) -> str:
        approve = press.action is not None
        token = attest(self.secret, Attested(run=run.id, pause=run.pause_key or "", approve=approve, action=press.action,
                                              approvers=tuple(approvers), at=self.clock())) if self.secret else ""
        run_input: dict[str, Any] = {"approve": approve, "approver": " + ".join(a.label() for a in approvers),
                                     "comment": "approved in Slack" if approve else "rejected in Slack", "attestation": token}
        if approve:
            run_input["action"] = press.action
        try:
            ok, detail = self.runs.resume(run.id, run_input)
        except Exception as exc:  # noqa: BLE001 - Prefect unreachable: say so, the button can be pressed again
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            return self._refuse(press, run, f"Prefect did not resume the run ({detail})")
        who = " + ".join(blocks.esc(a.name or a.id) for a in approvers)
        outcome = "approved" if approve else "rejected"
        self._record(press, run, outcome, "; ".join(a.label() for a in approvers))
        line = (f":white_check_mark: Approved by {who}: `{press.action}` — the run acts now" if approve
                else f":no_entry: Rejected by {who}: no action taken")
        self._update(press, line, close=True)
        log.info("run %s %s in Slack by %s", run.id, outcome, ", ".join(a.id for a in approvers))
        return outcome

    def _is_approver(self, policy: Policy, user: str) -> tuple[bool, str]:
        if user in policy.approvers.users:
            return True, ""
        for group in policy.approvers.groups:
            try:
                if user in self._members(group):
                    return True, ""
            except RunbookError as exc:  # fail closed: an unknown membership approves nothing
                log.warning("cannot read Slack user group %s: %s", group, exc)
                return False, f"could not check membership of user group {group} ({exc.message}); nothing was done"
        return False, f"you are not an approver of policy {policy.name}; nothing was done"

    def _members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        if cached is not None and self.clock() - cached[0] < GROUP_CACHE_S:
            return cached[1]
        if self.slack is None:
            raise RunbookError("no Slack bot token to look up user groups")
        members = frozenset(self.slack.usergroup_members(group))
        self._groups[group] = (self.clock(), members)
        return members

    # ------------------------------------------------------------------ side effects (never raise)
    def _refuse(self, press: Press, run: RunView | None, reason: str) -> str:
        log.warning("Slack press by %s (%s) on run %s refused: %s", press.user.id, press.action_id, press.run_id, reason)
        if run is not None:
            self._record(press, run, "refused", reason)
        self._ephemeral(press, f"Not done: {reason}.")
        return "refused"

    def _record(self, press: Press, run: RunView, outcome: str, detail: str) -> None:
        value = {"at": self.clock(), "user": press.user.id, "name": press.user.name, "action": press.action,
                 "button": press.action_id, "outcome": outcome, "detail": detail, "pause_key": run.pause_key}
        try:
            self.runs.record(run.id, f"{PRESS_KEY_PREFIX}{uuid.uuid4().hex}", value)
        except Exception as exc:  # noqa: BLE001 - the log line above/below stays the record
            log.error("could not record the Slack press on run %s: %s", run.id, exc)

    def _ephemeral(self, press: Press, text: str) -> None:
        if self.slack is None or not press.channel:
            return
        try:
            self.slack.post_ephemeral(press.channel, press.user.id, text)
        except RunbookError as exc:
            log.warning("ephemeral answer to %s failed: %s", press.user.id, exc)

    def _update(self, press: Press, line: str, *, close: bool) -> None:
        if self.slack is None or not press.channel or not press.ts:
            return
        try:
            self.slack.update_message(press.channel, press.ts, line, blocks.with_status(press.message_blocks, line, close=close))
        except RunbookError as exc:
            log.warning("chat.update of the approval message failed: %s", exc)
