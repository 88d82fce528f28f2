"""The pod-crash runbook as a Prefect flow: identify → contain (approval) → recover → verify → communicate.

Each step is bound to a step of runbooks/pod-crash.md by `@runbook_step`; the binding test keeps both
sides in sync. Everything the run learns goes into a `RunRecord` artifact (`pod-crash-record`) updated
after every step, so the post-mortem can be rebuilt from Prefect for any run, even a failed one.

Terminal states:
- resolved / dry-run / nothing to do → Completed.
- approval rejected → Completed ("rejected by <approver>; no action taken"): a person decided, the
  runbook did what it was told.
- approval timed out, or the guard refused every planned action → Failed ("approval timed out;
  escalated"): nobody acted on a live incident, which must stand out in the runs list; Prefect also
  marks a run whose pause timed out as Failed, so this stays consistent with the orchestrator.
- recovery or verification failed → Failed with the reason.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Completed, Failed, State

from flows.approval import request_approval
from flows.artifacts import Progress, artifact_key, clean, publish_link, publish_markdown, publish_raw_markdown, publish_table
from flows.params import PodCrashParams
from flows.postmortem import postmortem_flow, build_postmortem
from flows.steps import declared_steps, runbook_step
from k8s_runbooks.communicate import StatusUpdate, UpdateKind, render_status_update
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.guard import read_audit
from k8s_runbooks.models import (
    Action,
    ActionKind,
    ActionResult,
    Decision,
    Finding,
    PodDiagnosis,
    Severity,
    WorkloadRef,
    WorkloadStatus,
    utcnow,
)
from k8s_runbooks.postmortem.model import EvidenceItem, Outcome, RunRecord
from k8s_runbooks.postmortem.render import md_code_block, md_text
from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir
from tasks.events import object_events
from tasks.logs import container_logs
from tasks.notify import notify
from tasks.metrics import crash_condition_active, restart_rate
from tasks.pods import find_unhealthy_pods, workload_status
from tasks.remediation import execute_action, plan_is_allowed, wait_until_healthy
from tasks.sentry import recent_sentry_issues, sentry_on_failure

FLOW = "pod-crash"
RUNBOOK_PATH = runbooks_dir() / "pod-crash.md"
MAX_PODS_EXAMINED = 5  # describe/logs/events per pod are the expensive part; five show the pattern
VERIFY_POLL_SECONDS = 5.0


class StopRunbook(Exception):
    """Ends the runbook early on purpose (rejected, timed out, refused); not an error of the flow."""

    def __init__(self, outcome: Outcome, message: str, failed: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.failed = failed


@dataclass
class Ctx:
    params: PodCrashParams
    record: RunRecord
    flow_run_id: str
    run_url: str | None
    progress: Progress | None = None
    status: WorkloadStatus | None = None
    pods: list[PodDiagnosis] = field(default_factory=list)
    bad_rollout: bool = False
    plan: list[Action] = field(default_factory=list)
    chosen: Action | None = None
    actor: str = ""
    results: list[ActionResult] = field(default_factory=list)

    @property
    def target(self) -> WorkloadRef:
        return WorkloadRef(namespace=self.params.namespace, name=self.params.deployment)

    def save(self) -> None:
        publish_raw_markdown(artifact_key(FLOW, "record"), self.record.to_markdown(), "machine-readable run record (post-mortem source)")

    def evidence(self, step: str, title: str, kind: str, content: str) -> None:
        self.record.evidence.append(EvidenceItem(step=step, title=clean(title), kind=kind, content=clean(content)))  # type: ignore[arg-type]

    def finding(self, step: str, title: str, severity: Severity = Severity.warning, detail: str = "", **evidence: Any) -> Finding:
        safe = {k: clean(v) if isinstance(v, str) else v for k, v in evidence.items()}
        f = Finding(step=step, title=clean(title), severity=severity, detail=clean(detail), evidence=safe)
        self.record.findings.append(f)
        return f

    def note(self, event: str, detail: str = "", kind: str = "step") -> None:
        self.record.note(clean(event), clean(detail), kind)


# ------------------------------------------------------------------------------------ 1. identify
_TELLING = re.compile(r"panic|fatal|error|exception|killed|traceback", re.I)


def telling_line(lines: list[str]) -> str:
    """The line that names the failure: the last one mentioning panic/error/..., else the last line.
    (A crash often ends with a stack trace whose final frame says nothing.)"""
    kept = [line.strip() for line in lines if line.strip()]
    for line in reversed(kept):
        if _TELLING.search(line):
            return line[:300]
    return kept[-1][:300] if kept else ""


def _crash_findings(ctx: Ctx, pod: PodDiagnosis, last_lines: dict[str, str]) -> None:
    for c in pod.containers:
        where = f"{pod.name}/{c.name}"
        if c.last_terminated_reason == "OOMKilled":
            ctx.finding(
                "identify",
                f"OOMKilled: memory limit {c.memory_limit or 'unset'}, exit {c.last_exit_code if c.last_exit_code is not None else 137} ({where})",
                Severity.critical,
                detail=f"{c.restart_count} restarts",
                kind="oom", pod=pod.name, container=c.name, memory_limit=c.memory_limit, exit_code=c.last_exit_code or 137,
            )
        elif c.last_terminated_reason == "Error" or (c.last_exit_code not in (None, 0)):
            line = last_lines.get(c.name, "")
            ctx.finding(
                "identify",
                f"Error exit {c.last_exit_code}: last log line \"{line}\" ({where})" if line else f"Error exit {c.last_exit_code} ({where})",
                Severity.critical,
                detail=f"{c.restart_count} restarts, waiting: {c.waiting_reason or '-'}",
                kind="crash_error", pod=pod.name, container=c.name, exit_code=c.last_exit_code, last_log_line=line,
            )
        elif c.waiting_reason in ("ImagePullBackOff", "ErrImagePull"):
            ctx.finding("identify", f"{c.waiting_reason}: {c.waiting_message or ''} ({where})", Severity.critical, kind="image_pull", pod=pod.name, container=c.name)
        elif c.waiting_reason == "CreateContainerConfigError":
            ctx.finding("identify", f"CreateContainerConfigError: {c.waiting_message or ''} ({where})", Severity.critical, kind="config_error", pod=pod.name, container=c.name)


def _detect_bad_rollout(ctx: Ctx, crashing: list[PodDiagnosis]) -> None:
    """Crashes began with a new revision: every crashing pod belongs to the current ReplicaSet, which is
    newer than the previous one and was created inside the incident window."""
    st = ctx.status
    if st is None or st.current_replicaset is None or st.previous_replicaset is None or not crashing:
        return
    cur, prev = st.current_replicaset, st.previous_replicaset
    window_start = utcnow() - timedelta(minutes=ctx.params.incident_window_minutes)
    if cur.created_at is None or cur.created_at < window_start:
        return
    owner = f"ReplicaSet/{cur.name}"
    if not all(owner in p.owner_chain for p in crashing):
        return
    ctx.bad_rollout = True
    ctx.finding(
        "identify",
        f"Crashes began with revision {cur.revision} (ReplicaSet {cur.name}); previous revision {prev.revision} ({prev.name})",
        Severity.critical,
        detail=f"images {', '.join(cur.images)} (previously {', '.join(prev.images)})",
        kind="bad_rollout", revision=cur.revision, replicaset=cur.name, previous_replicaset=prev.name,
        created_at=cur.created_at.isoformat(),
    )


@runbook_step(FLOW, "identify")
def identify(ctx: Ctx) -> None:
    p = ctx.params
    log = get_run_logger()
    ctx.status = workload_status(p.namespace, p.deployment)
    pods = find_unhealthy_pods(p.namespace, p.deployment)
    ctx.pods = pods
    crashing = [x for x in pods if x.unhealthy]
    publish_table(
        artifact_key(FLOW, "identify", "pods"),
        [
            {
                "pod": x.name,
                "phase": x.phase,
                "ready": x.ready,
                "restarts": x.restart_count,
                "unhealthy": x.unhealthy,
                "reasons": ", ".join(x.reasons),
                "last termination": ", ".join(f"{c.name}: {c.last_terminated_reason} ({c.last_exit_code})" for c in x.containers if c.last_terminated_reason),
            }
            for x in pods
        ],
        f"Pods of {ctx.target}",
    )
    ctx.evidence("identify", f"Unhealthy pods of {p.namespace}/{p.deployment}", "pods", "\n".join(
        f"{x.name}  phase={x.phase} ready={x.ready} restarts={x.restart_count} reasons={','.join(x.reasons)}" for x in crashing
    ) or "none")

    for pod in crashing[:MAX_PODS_EXAMINED]:
        last_lines: dict[str, str] = {}
        for c in pod.containers:
            if not (c.last_terminated_reason or c.restart_count):
                continue
            excerpt = container_logs(p.namespace, pod.name, container=c.name, previous=True, tail_lines=p.log_tail_lines)
            line = telling_line(excerpt.lines)
            if line:
                last_lines[c.name] = line
            body = "\n".join(excerpt.lines[-50:]) if excerpt.lines else f"(no log: {excerpt.error or 'empty'})"
            ctx.evidence("identify", f"Previous log of {pod.name}/{c.name} (last 50 lines, {excerpt.redactions} redactions)", "log", body)
        events = object_events(p.namespace, "Pod", pod.name, include_owners=True)
        ctx.evidence("identify", f"Events of {pod.name} and its owners", "events", "\n".join(
            f"{(e.last_seen or e.first_seen or utcnow()):%H:%M:%S} {e.type} {e.involved_kind}/{e.involved_name} {e.reason}: {e.message} (x{e.count})" for e in events
        ) or "none")
        _crash_findings(ctx, pod, last_lines)

    _detect_bad_rollout(ctx, crashing)

    try:
        rate = restart_rate(p.namespace, p.deployment)
        ctx.evidence("identify", "Restart rate (Prometheus)", "query", rate.query + "\n" + "\n".join(
            f"{labels.get('pod', labels)} {value:g}" for labels, value in rate.samples
        ))
    except RunbookError as exc:  # metrics enrich the diagnosis; the cluster is the source of truth
        log.warning("restart rate unavailable: %s", exc)
        ctx.note("Prometheus restart rate unavailable", str(exc), "note")

    end = utcnow()
    start = end - timedelta(minutes=p.incident_window_minutes)
    try:
        issues = recent_sentry_issues(p.deployment, start, end)
    except RunbookError as exc:
        log.warning("Sentry issues unavailable: %s", exc)
        ctx.note("Sentry issues unavailable", str(exc), "note")
        issues = []
    for issue in issues:
        ctx.finding("identify", f"Sentry issue {issue.short_id or issue.id}: {issue.title}", Severity.warning,
                    detail=f"{issue.count or '?'} events", kind="sentry_issue", short_id=issue.short_id or issue.id, permalink=issue.permalink or "")
        if issue.permalink:
            publish_link(artifact_key(FLOW, "identify", "sentry", issue.short_id or issue.id), issue.permalink, f"Sentry {issue.short_id or issue.id}: {issue.title}")
    if issues:
        ctx.evidence("identify", "Sentry issues in the incident window", "sentry", "\n".join(f"{i.short_id or i.id} {i.title} {i.permalink or ''}" for i in issues))

    st = ctx.status
    desired = st.replicas if st else len(pods)
    ctx.record.impact = (
        f"{len(crashing)} of {desired} replicas of {p.namespace}/{p.deployment} crashing; "
        f"{st.ready_replicas if st else '?'} of {desired} ready at detection"
    )
    if crashing:
        first = min(
            [c.last_finished_at for x in crashing for c in x.containers if c.last_finished_at] or [utcnow()]
        )
        ctx.record.note(f"Crash detected: {len(crashing)} pod(s) of {p.namespace}/{p.deployment} crashing",
                        ", ".join(x.name for x in crashing), "detected", at=first)
    else:
        ctx.note(f"No crashing pods found in {p.namespace}/{p.deployment}", kind="note")

    md = [f"# Evidence: {md_text(ctx.target)}\n", f"**Impact**: {md_text(ctx.record.impact)}\n", "## Findings\n"]
    md += [f"- **{f.severity.value}** {md_text(f.title)}" for f in ctx.record.findings] or ["- none"]
    for item in ctx.record.evidence:
        md += [f"\n## {md_text(item.title)}\n", md_code_block(item.content)]
    publish_markdown(artifact_key(FLOW, "identify", "evidence"), "\n".join(md), "Evidence collected by the Identify step")


# ------------------------------------------------------------------------------------ 2. contain
def rank_actions(ctx: Ctx) -> list[Action]:
    """Candidate actions, most strongly supported by the evidence first."""
    p, st = ctx.params, ctx.status
    crashing = [x.name for x in ctx.pods if x.unhealthy]
    if not crashing:
        return []
    kinds = {f.evidence.get("kind") for f in ctx.record.findings}
    plan: list[Action] = []
    everything = p.allow_all_replicas
    if ctx.bad_rollout:
        plan.append(Action(kind=ActionKind.rollout_undo, target=ctx.target, allow_all_replicas=everything, evidence_score=0.9,
                           reason="the crashes began with the current revision; the previous one was healthy"))
    desired = st.replicas if st else len(ctx.pods)
    if "canary" in p.deployment and p.allow_all_replicas:
        plan.append(Action(kind=ActionKind.scale, target=ctx.target, allow_all_replicas=everything, replicas=0, evidence_score=0.7,
                           reason="a crash-looping canary is cheaper to stop than to debug live"))
    if len(crashing) < desired or p.allow_all_replicas:
        # A restart clears stuck state, but cannot fix an OOM limit or a code bug that every new pod hits.
        score = 0.3 if kinds & {"oom", "crash_error", "bad_rollout"} else 0.6
        plan.append(Action(kind=ActionKind.delete_pods, target=ctx.target, allow_all_replicas=everything, pods=crashing, evidence_score=score,
                           reason=f"restart the {len(crashing)} crashing pod(s); the healthy replicas keep serving"))
    else:
        ctx.note("Restarting every replica at once is not planned", "allow_all_replicas is off", "note")
    plan.append(Action(kind=ActionKind.rollout_restart, target=ctx.target, allow_all_replicas=everything, evidence_score=0.2,
                       reason="rolling restart of the workload, one pod at a time"))
    return sorted(plan, key=lambda a: a.evidence_score, reverse=True)


def _plan_markdown(ctx: Ctx, checks: dict[str, str]) -> str:
    lines = [f"## Evidence for {md_text(ctx.target)}\n", f"**Impact**: {md_text(ctx.record.impact)}\n"]
    lines += [f"- {md_text(f.title)}" for f in ctx.record.findings if f.step == "identify"] or ["- no findings"]
    lines += ["\n## Planned actions (most supported first)\n", "| id | action | evidence score | guard | why |", "|---|---|---|---|---|"]
    for a in ctx.plan:
        lines.append(f"| `{a.kind.value}` | {md_text(a.describe())} | {a.evidence_score:.1f} | {md_text(checks.get(a.kind.value, ''))} | {md_text(a.reason)} |")
    lines.append(f"\nApproval mode: **{ctx.params.approval}**. Approve to run the selected action; reject to change nothing.")
    return "\n".join(lines)


@runbook_step(FLOW, "contain")
def contain(ctx: Ctx) -> None:
    p = ctx.params
    ctx.plan = rank_actions(ctx)
    if not ctx.plan:
        ctx.record.outcome, ctx.record.outcome_detail = "resolved", "no crashing pods found; nothing to contain"
        publish_markdown(artifact_key(FLOW, "contain", "plan"), "# Plan\n\nNo crashing pods: nothing to do.")
        return

    checks: dict[str, str] = {}
    usable: list[Action] = []
    for action in ctx.plan:
        audit = plan_is_allowed(action, p.approval, "plan", ctx.flow_run_id)
        checks[action.kind.value] = f"{audit.decision.value}: {audit.reason}"
        if audit.decision is not Decision.refused:
            usable.append(action)
    plan_md = _plan_markdown(ctx, checks)
    publish_markdown(artifact_key(FLOW, "contain", "plan"), f"# Containment plan\n\n{plan_md}", "Ranked actions and guard pre-checks")
    ctx.note("Containment plan ready", "; ".join(f"{a.kind.value} ({a.evidence_score:.1f}): {checks[a.kind.value]}" for a in ctx.plan))
    if not usable:
        ctx.finding("contain", "Every planned action was refused by the guard", Severity.critical,
                    detail="; ".join(checks.values()), kind="escalation")
        raise StopRunbook("escalated", "every planned action was refused by the guard; escalated", failed=True)

    if p.approval == "auto":
        ctx.chosen, ctx.actor = usable[0], "auto"
        ctx.note(f"Approved automatically: {usable[0].kind.value}", "approval mode auto (drill or pre-approved route)", "approval")
        return
    if p.approval == "dry-run":
        ctx.chosen, ctx.actor = usable[0], "dry-run"
        ctx.note(f"Dry run: would perform {usable[0].kind.value}", usable[0].describe(), "approval")
        return

    ids = [a.kind.value for a in usable]
    ctx.note("Approval requested", f"options: {', '.join(ids)}; timeout {p.approval_timeout_seconds} s", "approval")
    ctx.save()
    answer = request_approval(clean(plan_md), ids, p.approval_timeout_seconds)
    if answer.timed_out:
        ctx.note("Approval timed out; escalated", f"no answer within {p.approval_timeout_seconds} s; nothing was changed", "escalation")
        ctx.finding("contain", "Approval timed out", Severity.critical,
                    detail=f"no approval within {p.approval_timeout_seconds} s", kind="escalation")
        raise StopRunbook("escalated", "approval timed out; escalated", failed=True)
    if not answer.approved:
        ctx.note(f"Rejected by {answer.approver}", answer.comment or "no comment", "approval")
        ctx.finding("contain", f"Plan rejected by {answer.approver}", Severity.info, detail=answer.comment or "no comment", kind="approval_rejected")
        raise StopRunbook("rejected", f"rejected by {answer.approver}; no action taken", failed=False)
    ctx.chosen = next(a for a in usable if a.kind.value == answer.action)
    ctx.actor = answer.approver
    ctx.note(f"Approved by {answer.approver}: {ctx.chosen.kind.value}", answer.comment or ctx.chosen.describe(), "approval")


# ------------------------------------------------------------------------------------ 3. recover
@runbook_step(FLOW, "recover")
def recover(ctx: Ctx) -> None:
    p = ctx.params
    if ctx.chosen is None:
        return
    result = execute_action(ctx.chosen, p.approval, ctx.actor, ctx.flow_run_id)
    ctx.results.append(result)
    ctx.record.actions.append(result)
    ctx.note(f"Action {result.decision.value}: {ctx.chosen.describe()}", result.detail, "action")
    if result.decision is Decision.refused:
        raise StopRunbook("escalated", f"the guard refused {ctx.chosen.kind.value}: {result.detail}; escalated", failed=True)
    if result.decision is Decision.dry_run or not result.executed:
        ctx.record.outcome, ctx.record.outcome_detail = "dry-run", "plan and audit recorded; nothing was changed"
        return
    expected = ctx.chosen.replicas if ctx.chosen.kind is ActionKind.scale else None
    health = wait_until_healthy(p.namespace, p.deployment, expected_replicas=expected,
                                stable_seconds=p.stable_seconds, timeout_seconds=p.recovery_timeout_seconds)
    ctx.evidence("recover", "Health after the action", "text", health.model_dump_json(indent=1))
    if not health.healthy:
        ctx.note("Recovery failed", health.detail, "escalation")
        raise RunbookError(f"{ctx.target} did not become healthy within {p.recovery_timeout_seconds} s: {health.detail}")
    ctx.record.note(f"Recovered: {health.ready_replicas}/{health.desired_replicas} ready, restarts stable",
                    f"after {health.waited_seconds:.0f} s", "recovered")
    ctx.record.outcome, ctx.record.outcome_detail = "mitigated", f"{ctx.chosen.describe()} by {ctx.actor}"


# ------------------------------------------------------------------------------------ 4. verify
@runbook_step(FLOW, "verify")
def verify(ctx: Ctx) -> None:
    p = ctx.params
    window = f"{p.verify_window_seconds}s"
    deadline = time.monotonic() + p.verify_timeout_seconds
    while True:
        check = crash_condition_active(p.namespace, p.deployment, window=window)
        active = check.breached or check.no_data
        if not active or ctx.record.outcome == "dry-run" or time.monotonic() >= deadline:
            break
        time.sleep(VERIFY_POLL_SECONDS)
    state = "no data" if check.no_data else ("active" if check.breached else "clear")
    ctx.evidence("verify", "Crash alert condition (Prometheus)", "query", f"{check.query}\nvalue={check.value} -> {state}")
    if ctx.record.outcome == "dry-run":
        ctx.note(f"Crash condition is {state} (dry run: not waited for)", f"value {check.value} over the last {window}", "note")
        return
    if active:
        raise RunbookError(f"the crash condition of {ctx.target} is still {state} after {p.verify_timeout_seconds} s")
    ctx.note("Verified: crash alert condition is clear", f"PodCrashLooping condition = {check.value} over the last {window}", "recovered")
    if ctx.record.outcome in ("mitigated", "in-progress"):
        ctx.record.outcome = "resolved"


# ------------------------------------------------------------------------------------ 5. communicate
_UPDATE_KIND: dict[str, UpdateKind] = {
    "resolved": "resolved", "mitigated": "mitigated", "escalated": "escalated", "failed": "escalated",
    "rejected": "escalated", "dry-run": "opened", "in-progress": "opened",
}


@runbook_step(FLOW, "communicate")
def communicate(ctx: Ctx) -> None:
    rec = ctx.record
    update = StatusUpdate(
        kind=_UPDATE_KIND[rec.outcome],
        target=str(ctx.target),
        summary=f"pod-crash runbook: {rec.outcome}" + (f" — {rec.outcome_detail}" if rec.outcome_detail else ""),
        impact=rec.impact,
        actions=[f"{r.action.describe()} ({r.decision.value}{', executed' if r.executed else ''})" for r in rec.actions],
        run_url=ctx.run_url,
        drill=rec.drill,
    )
    text = clean(render_status_update(update))
    publish_markdown(artifact_key(FLOW, "communicate", "status"), text, f"Status update: {update.kind}")
    sent = False
    try:
        sent = notify(text)
    except RunbookError as exc:  # a failed notification must not hide the incident's outcome
        ctx.note("Status update could not be sent", str(exc), "communication")
    ctx.note(f"Status update ({update.kind}) {'sent' if sent else 'stored as artifact'}", update.summary, "communication")


# ------------------------------------------------------------------------------------ the flow
def _mark_failed(flow_run_id: str, message: str) -> None:
    """After a pause timeout the server has already failed the run ("never resumed") and ignores the
    engine's final state; force ours so the run says why it failed."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Failed(message=message), force=True)


def _run_step(ctx: Ctx, fn: Any) -> None:
    step_id = fn.runbook_step
    assert ctx.progress is not None
    ctx.progress.start(step_id)
    ctx.note(f"Step {step_id} started")
    try:
        fn(ctx)
    finally:
        ctx.progress.finish(step_id)
        ctx.save()


@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def pod_crash(params: PodCrashParams) -> State:
    runbook = load_runbook(RUNBOOK_PATH)
    flow_run_id = str(runtime_flow_run.id)
    record = RunRecord(flow=FLOW, runbook_title=runbook.title, namespace=params.namespace, deployment=params.deployment,
                       approval_mode=params.approval, drill=params.drill)
    ctx = Ctx(params=params, record=record, flow_run_id=flow_run_id, run_url=runtime_flow_run.ui_url)
    publish_raw_markdown(artifact_key(FLOW, "runbook"), runbook.markdown, f"The human runbook: {runbook.path}")
    ctx.progress = Progress(artifact_key(FLOW, "progress"), declared_steps(FLOW))
    ctx.note("Runbook started", f"approval={params.approval}" + (f"; notes: {params.notes}" if params.notes else ""))

    stop: StopRunbook | None = None
    error: Exception | None = None
    try:
        for step in (identify, contain, recover, verify):
            _run_step(ctx, step)
            if ctx.record.outcome == "resolved" and ctx.chosen is None:
                break  # nothing was crashing
    except StopRunbook as exc:
        stop = exc
        record.outcome, record.outcome_detail = exc.outcome, exc.message
    except Exception as exc:  # noqa: BLE001 - recorded, communicated, post-mortem written, then re-raised
        error = exc
        record.outcome, record.outcome_detail = "failed", clean(str(exc))
        ctx.note("Runbook failed", str(exc), "escalation")

    _run_step(ctx, communicate)
    if record.outcome == "in-progress":
        record.outcome = "resolved"
    ctx.note(f"Runbook finished: {record.outcome}", record.outcome_detail)
    record.audit = read_audit(flow_run_id)
    ctx.save()
    try:
        postmortem_flow(run_id=flow_run_id)
    except Exception as exc:  # noqa: BLE001 - the CLI can rebuild it; never mask the incident outcome
        get_run_logger().error("post-mortem could not be written: %s", exc)

    if error is not None:
        raise error
    if stop is not None:
        if stop.failed:
            _mark_failed(flow_run_id, stop.message)
            return Failed(message=stop.message)
        return Completed(message=stop.message)
    return Completed(message=f"{record.outcome}: {record.outcome_detail}" if record.outcome_detail else record.outcome)


def run_pod_crash(params: PodCrashParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    state = pod_crash(params, return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    try:
        path: Path | None = build_postmortem(flow_run_id)
    except RunbookError:
        path = None
    return flow_run_id, state, path
