"""Approval of destructive actions: a typed RunInput form shown in the Prefect UI and resumable by API.

Resume from anywhere with `prefect.flow_runs.resume_flow_run(id, run_input={"approve": true,
"action": "<id>", "approver": "alice", "comment": "..."})` or `POST /api/flow_runs/{id}/resume`.
The `action` field is narrowed to the ids of the ranked plan, so the server rejects unknown actions.
The wait survives a Prefect API outage (restart, 503s) up to the approval's own timeout: `wait_for_approval`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import Logger, LoggerAdapter
from typing import Any, Literal, TypeVar
from uuid import UUID

import httpx
from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Abort, Pause
from prefect.input import Keyset, RunInput, keyset_from_paused_state
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import RunInputMetadata
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Paused
from prefect.utilities.engine import propose_state_sync
from pydantic import Field, create_model

R = TypeVar("R", bound=RunInput)
T = TypeVar("T")
# One short attempt per call (client retries off): the wait does the retrying, so an outage is noticed at
# once and the deadline is overshot by at most one request.
REQUEST_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 15.0


class ApprovalCancelled(Exception):
    """The run was cancelled while it waited for an approval (e.g. its alert resolved): nothing may be done."""


class ApprovalInput(RunInput):
    approve: bool = Field(False, description="Approve the selected action (off = reject, nothing is changed).")
    action: str = Field("", description="Which planned action to perform.")
    approver: str = Field("", description="Your name or handle, for the audit log.")
    comment: str = Field("", description="Why (recorded in the timeline and the post-mortem).")
    attestation: str = Field("", description="Filled in by the Slack approval path (proof of a verified approver); "
                                             "leave it empty in the UI.")


@dataclass(frozen=True)
class ApprovalOutcome:
    approved: bool
    action: str | None
    approver: str
    comment: str
    timed_out: bool = False
    unanswered: bool = False  # resumed without the form's answer (a bare resume, or a state forced to Running)
    attestation: str = ""  # the Slack path's proof of a verified answer (flows/chatops.py checks it)
    void_reason: str = ""  # set when an answer acts on nothing (two-person rule unmet, evidence changed, ...)


def approval_form(action_ids: list[str]) -> type[ApprovalInput]:
    """ApprovalInput whose `action` accepts only the planned action ids (first = recommended)."""
    if not action_ids:
        raise ValueError("an approval needs at least one planned action")
    choice = Literal[tuple(action_ids)]  # type: ignore[valid-type]
    return create_model(  # type: ignore[call-overload,no-any-return]
        "ApprovalInput",
        __base__=ApprovalInput,
        action=(choice, Field(action_ids[0], description="Which planned action to perform (first = recommended).")),
    )


def request_approval(description: str, action_ids: list[str], timeout_seconds: int, key: str | None = None) -> ApprovalOutcome:
    """Pause the flow run until someone resumes it with the form, or until the timeout."""
    form = approval_form(action_ids).with_initial_data(description=description, approve=False, action=action_ids[0])
    try:
        answer = wait_for_approval(form, timeout_seconds, poll_interval=1.0, key=key)
    except NoAnswer:
        return ApprovalOutcome(approved=False, action=None, approver="", comment="", unanswered=True)
    if answer is None:
        return ApprovalOutcome(approved=False, action=None, approver="", comment="", timed_out=True)
    approver = (answer.approver or "").strip() or "unknown"
    return ApprovalOutcome(
        approved=bool(answer.approve),
        action=str(answer.action) if answer.approve else None,
        approver=approver,
        comment=(answer.comment or "").strip(),
        attestation=(answer.attestation or "").strip(),
    )


def is_api_outage(exc: BaseException) -> bool:
    """The Prefect API is unreachable or failing (connection refused, timeout, 408/429/5xx such as SQLite
    "database is locked" 503), as opposed to answering that something is wrong (404, 422, ...)."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):  # PrefectHTTPStatusError included
        code = exc.response.status_code
        return code in (408, 429) or code >= 500
    return False


class NoAnswer(Exception):
    """The run was resumed without an answer to the form: only the typed resume approves, so nothing is."""


class _Expired(Exception):
    """The approval deadline passed while the API was failing."""


class _PatientApi:
    """Calls to the Prefect API that wait out outages (backoff up to MAX_BACKOFF_S) until `deadline`, with one
    warning when the API stops answering and one line when it answers again: not one line per attempt."""

    def __init__(self, log: Logger | LoggerAdapter[Any], deadline: float, interval: float) -> None:
        self.log, self.deadline, self.interval = log, deadline, interval
        self.since: float | None = None
        self.failures = 0

    def call(self, fn: Callable[[], T]) -> T:
        delay = self.interval
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_api_outage(exc):
                    raise
                remaining = self.deadline - time.monotonic()
                self.failures += 1
                if self.since is None:
                    self.since = time.monotonic()
                    self.log.warning("Prefect API unreachable while waiting for approval (%s: %s); still waiting, "
                                     "%.0f s left before the approval times out", type(exc).__name__, exc, remaining)
                if remaining <= 0:
                    raise _Expired() from exc
                time.sleep(min(delay, remaining))  # the last attempt falls on the deadline
                delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                if self.since is not None:
                    self.log.info("Prefect API answering again after %.1f s (failed requests: %d); still waiting for approval",
                                  time.monotonic() - self.since, self.failures)
                    self.since, self.failures = None, 0
                return result


def _propose_pause(client: SyncPrefectClient, paused: State, flow_run_id: UUID) -> State:
    try:
        return propose_state_sync(client, paused, flow_run_id=flow_run_id)
    except Pause as exc:  # proposed again after a lost answer: the server says the run is paused already
        assert exc.state is not None
        return exc.state
    except Abort as exc:
        raise RuntimeError(f"Flow run cannot be paused: {exc}") from exc


def _load_answer(form: type[R], keyset: Keyset, flow_run_id: UUID) -> R:
    """The answer given with the resume; NoAnswer when the run was resumed without one (the server accepts a
    resume with no input, and a forced state change bypasses the form)."""
    # Not `form.load`: it turns a missing answer into the form's defaults, i.e. an anonymous "rejection".
    value = read_flow_run_input(keyset["response"], flow_run_id=flow_run_id)
    if not value:
        raise NoAnswer()
    answer = form(**value)
    answer._metadata = RunInputMetadata(key=keyset["response"], sender=None, receiver=flow_run_id)
    return answer


def _save_form(client: SyncPrefectClient, form: type[RunInput], keyset: Keyset, flow_run_id: UUID) -> None:
    """RunInput.save, safe to repeat: a save whose answer was lost left its keys behind (409 on the retry)."""
    try:
        form.save(keyset, flow_run_id=flow_run_id)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 409:
            raise
        for key in (keyset["schema"], keyset["description"]):
            try:
                client.delete_flow_run_input(flow_run_id, key)
            except httpx.HTTPStatusError as gone:
                if gone.response.status_code != 404:
                    raise
        form.save(keyset, flow_run_id=flow_run_id)


def wait_for_approval(form: type[R], timeout_seconds: int, poll_interval: float = 1.0, key: str | None = None) -> R | None:
    """Pause the current flow run for `form` and return the answer, or None when nobody answered in time.

    Why not Prefect's `pause_flow_run`: a request that still fails after the client's own retries (about a
    minute) raises out of it, so a Prefect API restart during an approval wait failed the run. This does
    what `pause_flow_run` does in Prefect 3.9 -- the same Paused state (pause key = the run's pause counter
    unless `key` is given, `timeout_seconds`, run-input keyset `paused-<key>-*`), the form's schema and
    description saved with `RunInput.save` after the pause (the server clears the keyset when it pauses),
    the answer read from the run-input keyset once the server has moved the run to Running -- so the UI's Resume
    dialog and `POST /api/flow_runs/{id}/resume` validate the answer exactly as before. The difference: every
    call waits out connection errors, timeouts and 408/429/5xx answers (client retries off, our backoff,
    one log line per outage) until the pause's own deadline; other errors (the run deleted: 404) raise at
    once. At the deadline, one last check; if the API is still down, None: a timeout never acts. A resume
    without the form's answer raises NoAnswer: only the typed, schema-checked resume approves.
    """
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("an approval can only be requested inside a flow run")
    log = get_run_logger()
    flow_run_id: UUID = ctx.flow_run.id
    ctx.observed_flow_pauses["counter"] = ctx.observed_flow_pauses.get("counter", 0) + 1  # as pause_flow_run counts
    paused = Paused(timeout_seconds=timeout_seconds, reschedule=False, pause_key=key or str(ctx.observed_flow_pauses["counter"]))
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = keyset
    deadline = time.monotonic() + timeout_seconds
    api = _PatientApi(log, deadline, poll_interval)

    log.info("Pausing flow run for approval (%d s); resume it with the form in the UI or the API", timeout_seconds)
    with (temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}),
          get_client(httpx_settings={"timeout": httpx.Timeout(REQUEST_TIMEOUT_S)}, sync_client=True) as client):
        try:
            state = api.call(lambda: _propose_pause(client, paused, flow_run_id))
            if state.is_running():  # this pause key already fired and was resumed (a retried flow run)
                return api.call(lambda: _load_answer(form, keyset, flow_run_id))
            if not state.is_paused():
                raise RuntimeError(f"Flow run cannot be paused: the API answered with state {state.type.value}")
            api.call(lambda: _save_form(client, form, keyset, flow_run_id))
            while True:
                time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))
                run = api.call(lambda: client.read_flow_run(flow_run_id))
                if run.state is not None and (run.state.is_cancelling() or run.state.is_cancelled()):
                    log.info("Cancelled while waiting for approval (%s): nothing is done", run.state.message or run.state.name)
                    raise ApprovalCancelled(run.state.message or "the run was cancelled while it waited for approval")
                if run.state is not None and run.state.is_running():
                    log.info("Resumed: reading the answer to the approval form")
                    try:
                        return api.call(lambda: _load_answer(form, keyset, flow_run_id))
                    except NoAnswer:
                        log.warning("Resumed without an answer to the approval form: not approved, nothing is done")
                        raise
                if time.monotonic() >= deadline:
                    return None
        except _Expired:
            return None
