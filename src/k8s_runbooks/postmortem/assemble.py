"""Assemble a PostMortem from Prefect alone: the run, its subflow runs, their states and artifacts.

The flow's `RunRecord` artifact (key `<flow>-record`) carries findings, decisions, actions and
evidence; state transitions of the run and its subflows add the orchestration side of the timeline.
The guard's audit log (settings.state_dir/audit.jsonl) adds decisions the record may have missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from k8s_runbooks.errors import InvalidInput, NotFound
from k8s_runbooks.models import AuditRecord, Decision, TimelineEntry, utcnow
from k8s_runbooks.postmortem.analysis import analyse
from k8s_runbooks.postmortem.model import PostMortem, RunRecord

_STATES_SHOWN = {"RUNNING", "PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_MAX_DEPTH = 3


def _uuid(flow_run_id: str | UUID) -> UUID:
    try:
        return flow_run_id if isinstance(flow_run_id, UUID) else UUID(str(flow_run_id))
    except ValueError:
        raise InvalidInput(f"{flow_run_id!r} is not a flow run id", hint="pass the UUID shown by `prefect flow-run ls`") from None


async def _subflow_runs(client: Any, root: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    found: list[Any] = []
    frontier = [root]
    for _ in range(_MAX_DEPTH):
        if not frontier:
            break
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
        )
        found.extend(runs)
        frontier = [r.id for r in runs]
    return found


async def _records(client: Any, run_ids: list[UUID]) -> dict[UUID, RunRecord]:
    """Each run's newest run record (artifact key `<flow>-record`)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids)))
    newest: dict[UUID, Any] = {}
    for a in artifacts:
        if not (a.key and a.key.endswith("-record") and isinstance(a.data, str) and a.flow_run_id):
            continue
        if a.flow_run_id not in newest or (a.created or datetime.min) >= (newest[a.flow_run_id].created or datetime.min):
            newest[a.flow_run_id] = a
    out = {run_id: RunRecord.from_markdown(a.data) for run_id, a in newest.items()}
    return {k: v for k, v in out.items() if v is not None}


def merge_records(root: RunRecord | None, subs: list[RunRecord], fallback_flow: str) -> RunRecord:
    """One record for the whole incident: the parent's, with its subflows' timeline, findings, actions,
    audit, evidence and charts (a runbook without a parent keeps its own record unchanged)."""
    if root is None:
        if not subs:
            return RunRecord(flow=fallback_flow)
        root, subs = subs[0], subs[1:]
    if not subs:
        return root
    merged = root.model_copy(deep=True)
    for sub in subs:
        merged.timeline += sub.timeline
        merged.findings += sub.findings
        merged.actions += sub.actions
        merged.audit += sub.audit
        merged.evidence += sub.evidence
        merged.charts += [c for c in sub.charts if c.path not in {x.path for x in merged.charts}]
        merged.impact = merged.impact or sub.impact
        merged.deployment = merged.deployment or sub.deployment
    merged.timeline.sort(key=lambda e: e.at)
    return merged


def _audit_from_log(state_dir: Path, flow_run_id: str) -> list[AuditRecord]:
    from k8s_runbooks.guard import read_audit
    from k8s_runbooks.settings import Settings

    return read_audit(flow_run_id, settings=Settings(state_dir=state_dir))


def _state_entries(label: str, states: list[Any]) -> list[TimelineEntry]:
    out: list[TimelineEntry] = []
    for s in states:
        if s.type.value not in _STATES_SHOWN or s.timestamp is None:
            continue
        if s.type.value == "RUNNING" and s.name == "Resuming":
            continue
        detail = (s.message or "")[:300]
        kind = "approval" if s.type.value == "PAUSED" else "step"
        out.append(TimelineEntry(at=s.timestamp, event=f"{label} state: {s.name}", detail=detail, kind=kind))
    return out


def _ui_url(flow_run_id: UUID) -> str | None:
    try:
        from prefect.settings import PREFECT_UI_URL

        base = PREFECT_UI_URL.value()
    except Exception:  # noqa: BLE001 - a missing UI URL only drops a link
        return None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


async def assemble(flow_run_id: str | UUID, client: Any, state_dir: Path | None = None) -> PostMortem:
    from prefect.exceptions import ObjectNotFound

    run_id = _uuid(flow_run_id)
    try:
        run = await client.read_flow_run(run_id)
    except ObjectNotFound:
        raise NotFound(f"flow run {run_id} does not exist on this Prefect server", hint="check PREFECT_API_URL") from None
    subruns = await _subflow_runs(client, run_id)
    records = await _records(client, [run_id] + [r.id for r in subruns])
    subs = sorted((records[r.id] for r in subruns if r.id in records), key=lambda rec: rec.started_at)
    record = merge_records(records.get(run_id), subs, run.name)

    timeline = list(record.timeline)
    timeline += _state_entries("runbook", await client.read_flow_run_states(run_id))
    for sub in subruns:
        flow_name = (await client.read_flow(sub.flow_id)).name
        timeline += _state_entries(f"subflow {flow_name} ({sub.name})", await client.read_flow_run_states(sub.id))
    timeline.sort(key=lambda e: e.at)

    audit = list(record.audit)
    if state_dir is not None:
        known = {(a.at, a.action.kind, a.decision) for a in audit}
        for rid in [run_id] + [r.id for r in subruns]:
            audit += [a for a in _audit_from_log(state_dir, str(rid)) if (a.at, a.action.kind, a.decision) not in known]
    audit.sort(key=lambda a: a.at)

    start = min([run.start_time or run.created or utcnow()] + [e.at for e in timeline])
    end = run.end_time or (timeline[-1].at if timeline else utcnow())
    duration = max(end - start, timedelta(0))
    final_state = run.state.name if run.state else ""
    if run.state and run.state.message and run.state.is_final():
        final_state += f" — {run.state.message}"

    causes, items, lessons = analyse(record)
    actions_taken = [
        f"{a.started_at:%H:%M:%S} {a.action.describe()} — {a.decision.value}, {'executed' if a.executed else 'not executed'}"
        + (f": {a.detail}" if a.detail else "")
        for a in record.actions
    ]
    for a in audit:
        if a.decision is Decision.refused:
            actions_taken.append(f"{a.at:%H:%M:%S} refused by the guard: {a.action.describe()} — {a.reason} (asked by {a.actor})")
    if not actions_taken:
        actions_taken.append("No remediation was executed.")
    recorded = {(r.action.kind, r.decision) for r in record.actions}
    for a in audit:
        if (a.action.kind, a.decision) in recorded:
            continue  # the flow's own timeline already has this action, with its outcome
        timeline_entry = TimelineEntry(at=a.at, event=f"guard {a.decision.value}: {a.action.describe()}", detail=f"{a.reason} (actor: {a.actor})", kind="action")
        if not any(e.kind == "action" and e.event == timeline_entry.event and abs((e.at - a.at).total_seconds()) < 1 for e in timeline):
            timeline.append(timeline_entry)
    timeline.sort(key=lambda e: e.at)

    target = f"{record.namespace}/{record.deployment}" if record.deployment else run.name
    crashing = [f for f in record.findings if f.evidence.get("kind") in ("oom", "crash_error")]
    latency = [f for f in record.findings if f.evidence.get("kind") == "high_latency"]
    runbooks = [s.flow for s in subs if s.flow != record.flow]
    found = f"{len(crashing)} crash finding(s)" + (f" and {len(latency)} latency finding(s)" if latency else "")
    summary = (
        f"The {record.flow} runbook ran for {target} in {record.approval_mode} approval mode "
        f"(flow run {run.name})" + (f" and dispatched the {', '.join(runbooks)} runbook" if runbooks else "")
        + f". {found} were recorded. "
        f"Outcome: {record.outcome}" + (f" — {record.outcome_detail}." if record.outcome_detail else ".")
    )
    return PostMortem(
        title=f"{record.runbook_title or record.flow} — {target}",
        flow_run_id=str(run_id),
        flow_run_name=run.name,
        flow_run_url=_ui_url(run_id),
        final_state=final_state,
        date=start,
        duration=duration,
        impact=record.impact or f"{target}: impact not measured",
        summary=summary,
        timeline=timeline,
        root_cause=causes,
        actions_taken=actions_taken,
        lessons_learned=lessons,
        action_items=items,
        evidence=record.evidence,
        charts=record.charts,
        drill=record.drill,
    )
