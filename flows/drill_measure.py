"""What a fault-family drill measures beyond detection and recovery, read from the runbook run the alert started:
when its ranked causes were published and which cause came first (time to diagnose), and when it escalated
(time to escalate, for the families whose answer is a person's change)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prefect import get_client

from k8s_runbooks.postmortem.model import RunRecord

POLL = 1.0


@dataclass(frozen=True)
class Diagnosed:
    at: datetime
    top_cause: str  # "" when no signature matched
    ranked: list[str]


def first_diagnosis(run_id: str) -> Diagnosed | None:
    """The run's first ranked-causes artifact (`<flow>-<step>-causes`), if it has published one."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)])))
    causes = sorted((a for a in arts if (a.key or "").endswith("-causes") and a.created), key=lambda a: a.created)
    if not causes:
        return None
    data = causes[0].data
    rows = json.loads(data) if isinstance(data, str) else (data or [])
    ranked = [str(r.get("cause", "")) for r in rows if isinstance(r, dict)]
    return Diagnosed(at=causes[0].created, top_cause=ranked[0] if ranked else "", ranked=ranked)  # type: ignore[arg-type]


def wait_for_diagnosis(run_id: str, timeout_seconds: float) -> Diagnosed | None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        found = first_diagnosis(run_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(POLL)


def escalated_at(record: RunRecord | None, ended: datetime | None) -> datetime | None:
    """When the run escalated: its first escalation event, else its end (None: it did not escalate)."""
    if record is None or record.outcome != "escalated":
        return None
    events = sorted(e.at for e in record.timeline if e.kind == "escalation")
    return events[0] if events else ended
