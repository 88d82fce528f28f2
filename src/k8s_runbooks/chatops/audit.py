"""The approval audit: every approval and escalation step of a run (posted, pressed, refused, approved,
escalated, paged, page resolved) as JSON lines in `state_dir/approvals.jsonl`, beside the guard's audit log."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from k8s_runbooks.models import utcnow

APPROVALS_FILE = "approvals.jsonl"


class ApprovalEvent(BaseModel):
    at: datetime = Field(default_factory=utcnow)
    flow_run_id: str
    event: str = Field(description="requested, posted, press, approved, rejected, escalated, paged, page_resolved, ...")
    actor: str = Field("", description="Slack user (verified), Prefect UI (unverified), or the runbook")
    detail: str = ""


def append_event(state_dir: Path, event: ApprovalEvent) -> None:
    path = Path(state_dir) / APPROVALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.write(event.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_events(state_dir: Path, flow_run_id: str | None = None) -> list[ApprovalEvent]:
    try:
        lines = (Path(state_dir) / APPROVALS_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            event = ApprovalEvent.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            continue
        if flow_run_id is None or event.flow_run_id == flow_run_id:
            out.append(event)
    return out
