"""Approval of destructive actions: a typed RunInput form shown in the Prefect UI and resumable by API.

Resume from anywhere with `prefect.flow_runs.resume_flow_run(id, run_input={"approve": true,
"action": "<id>", "approver": "alice", "comment": "..."})` or `POST /api/flow_runs/{id}/resume`.
The `action` field is narrowed to the ids of the ranked plan, so the server rejects unknown actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model


class ApprovalInput(RunInput):
    approve: bool = Field(False, description="Approve the selected action (off = reject, nothing is changed).")
    action: str = Field("", description="Which planned action to perform.")
    approver: str = Field("", description="Your name or handle, for the audit log.")
    comment: str = Field("", description="Why (recorded in the timeline and the post-mortem).")


@dataclass(frozen=True)
class ApprovalOutcome:
    approved: bool
    action: str | None
    approver: str
    comment: str
    timed_out: bool = False


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
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_seconds, poll_interval=1, key=key)
    except FlowPauseTimeout:
        return ApprovalOutcome(approved=False, action=None, approver="", comment="", timed_out=True)
    approver = (answer.approver or "").strip() or "unknown"
    return ApprovalOutcome(
        approved=bool(answer.approve),
        action=str(answer.action) if answer.approve else None,
        approver=approver,
        comment=(answer.comment or "").strip(),
    )
