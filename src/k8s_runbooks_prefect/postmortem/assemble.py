"""Assemble a PostMortem from Prefect alone: the run, its subflow runs, their states and artifacts.

The flow's `RunRecord` artifact (key `<flow>-record`) carries findings, decisions, actions and
evidence; state transitions of the run and its subflows add the orchestration side of the timeline.
The guard's audit log (settings.state_dir/audit.jsonl) adds decisions the record may have missed.
The alerts that opened or joined the incident come from the `incident-alerts` table the alert receiver keeps on
the run it created: the run's own, or its parent's for a runbook dispatched as a subflow (incident-response
running pod-crash).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from k8s_runbooks.alerts.incidents import ALERTS_ARTIFACT_KEY
from k8s_runbooks.errors import InvalidInput, NotFound
from k8s_runbooks.models import AuditRecord, Decision, TimelineEntry, utcnow
from k8s_runbooks.postmortem.analysis import analyse
from k8s_runbooks.postmortem.model import IncidentAlert, PostMortem, RunRecord

_STATES_SHOWN = {"RUNNING", "PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_MAX_DEPTH = 3
_RECORD_CANDIDATES = 5


def _uuid(flow_run_id: str | UUID) -> UUID:
    try:
        return flow_run_id if isinstance(flow_run_id, UUID) else UUID(str(flow_run_id))
    except ValueError:
        raise InvalidInput(f"{flow_run_id!r} is not a flow run id", hint="pass the UUID shown by `prefect flow-run ls`") from None


@dataclass
class _SubRun:
    id: UUID
    name: str
    flow_name: str


@dataclass
class _Runs:
    run: Any
    subruns: list[_SubRun]
    states: dict[UUID, list[Any]]
    records: dict[UUID, RunRecord]


async def _gather_runs(client: Any, run_id: UUID) -> _Runs:
    """The run, its subflow runs (up to _MAX_DEPTH levels) with their flow names, every run's states and
    newest run record.

    Requests that do not depend on each other go out together, level by level: on a busy server the
    post-mortem waits for a few round trips instead of one per run, per state history and per record."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.exceptions import ObjectNotFound

    async def children(parents: list[UUID]) -> list[Any]:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)))

    try:
        run, level, root_states, root_record = await asyncio.gather(
            client.read_flow_run(run_id), children([run_id]), client.read_flow_run_states(run_id),
            _newest_record(client, run_id))
    except ObjectNotFound:
        raise NotFound(f"flow run {run_id} does not exist on this Prefect server", hint="check PREFECT_API_URL") from None
    states: dict[UUID, list[Any]] = {run_id: root_states}
    records: dict[UUID, RunRecord | None] = {run_id: root_record}
    found: list[Any] = []
    depth = 1
    while level:
        found.extend(level)
        ids = [r.id for r in level]
        more = [children(ids)] if depth < _MAX_DEPTH else []
        answers = await asyncio.gather(*more, *(client.read_flow_run_states(i) for i in ids),
                                       *(_newest_record(client, i) for i in ids))
        states.update(zip(ids, answers[len(more):len(more) + len(ids)]))
        records.update(zip(ids, answers[len(more) + len(ids):]))
        level = answers[0] if more else []
        depth += 1
    flow_ids = list({r.flow_id for r in found})
    flows = dict(zip(flow_ids, await asyncio.gather(*(client.read_flow(f) for f in flow_ids))))
    subruns = [_SubRun(id=r.id, name=r.name, flow_name=flows[r.flow_id].name) for r in found]
    return _Runs(run=run, subruns=subruns, states=states,
                 records={k: v for k, v in records.items() if v is not None})


async def _newest_record(client: Any, run_id: UUID) -> RunRecord | None:
    """The run's newest run record (artifact key `<flow>-record`).

    Only record artifacts are fetched, newest first: the run's other artifacts (tables, logs, plans)
    and its older record versions never cross the wire, and a run with more artifacts than the
    server's page (200) still yields its newest record."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                                       key=ArtifactFilterKey(like_="-record")),
        sort=ArtifactSort.CREATED_DESC, limit=_RECORD_CANDIDATES,
    )
    for a in artifacts:  # `like_` also matches keys that merely contain "-record"
        if a.key and a.key.endswith("-record") and isinstance(a.data, str):
            return RunRecord.from_markdown(a.data)
    return None


async def _incident_alerts(client: Any, run: Any) -> list[IncidentAlert]:
    """The alerts of the incident: the `incident-alerts` table of the run, or of the runs above it (a subflow's
    alerts are its parent's: the receiver created the parent). Each alert once, oldest table first."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    chain = [run.id]
    parent_task = run.parent_task_run_id
    for _ in range(_MAX_DEPTH):
        if parent_task is None:
            break
        task = await client.read_task_run(parent_task)
        if task.flow_run_id is None:
            break
        chain.append(task.flow_run_id)
        parent_task = (await client.read_flow_run(task.flow_run_id)).parent_task_run_id
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=chain),
                                       key=ArtifactFilterKey(any_=[ALERTS_ARTIFACT_KEY])),
        sort=ArtifactSort.CREATED_DESC, limit=len(chain) * _RECORD_CANDIDATES)
    newest: dict[Any, Any] = {}
    for a in artifacts:
        newest.setdefault(a.flow_run_id, a)
    alerts: list[IncidentAlert] = []
    seen: set[tuple[str, str, str]] = set()
    for run_id in reversed(chain):  # the outermost run's table first: it holds the incident's opener
        artifact = newest.get(run_id)
        try:
            rows = json.loads(artifact.data) if artifact is not None and isinstance(artifact.data, str) else []
        except ValueError:
            rows = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            alert = IncidentAlert.model_validate({k: str(v) for k, v in row.items() if v is not None})
            if (key := (alert.source, alert.fingerprint, alert.starts_at)) not in seen:
                seen.add(key)
                alerts.append(alert)
    return alerts


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
        # The dispatched runbook diagnosed the workload itself: its ranking is the incident's root cause.
        merged.hypotheses = sub.hypotheses or merged.hypotheses
        merged.plan = sub.plan or merged.plan
        merged.snapshot_key = sub.snapshot_key or merged.snapshot_key
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
    run_id = _uuid(flow_run_id)
    runs = await _gather_runs(client, run_id)
    run, subruns, states, records = runs.run, runs.subruns, runs.states, runs.records
    alerts = await _incident_alerts(client, run)
    subs = sorted((records[r.id] for r in subruns if r.id in records), key=lambda rec: rec.started_at)
    record = merge_records(records.get(run_id), subs, run.name)

    timeline = list(record.timeline)
    timeline += _state_entries("runbook", states[run_id])
    for sub in subruns:
        timeline += _state_entries(f"subflow {sub.flow_name} ({sub.name})", states[sub.id])
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
    runbooks = [s.flow for s in subs if s.flow != record.flow]
    top = record.hypotheses[0] if record.hypotheses else None
    found = (f"The diagnosis ranked {len(record.hypotheses)} cause(s), most likely {top.cause.value} on "
             f"{top.object.kind}/{top.object.name} (confidence {top.confidence:.2f})") if top else "No cause was diagnosed"
    summary = (
        f"The {record.flow} runbook ran for {target} in {record.approval_mode} approval mode "
        f"(flow run {run.name})" + (f" and dispatched the {', '.join(runbooks)} runbook" if runbooks else "")
        + f". {found}. "
        f"Outcome: {record.outcome}" + (f" — {record.outcome_detail}." if record.outcome_detail else ".")
    )
    if len(alerts) > 1:
        joined = sum(1 for a in alerts if a.role == "joined")
        summary += (f" {len(alerts)} alerts were one incident ({joined} joined the running incident): "
                    f"{', '.join(sorted({a.alertname for a in alerts}))}.")
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
        ranked_causes=record.hypotheses,
        plan=record.plan,
        snapshot_key=record.snapshot_key,
        actions_taken=actions_taken,
        lessons_learned=lessons,
        action_items=items,
        evidence=record.evidence,
        charts=record.charts,
        drill=record.drill,
        alerts=alerts,
    )
