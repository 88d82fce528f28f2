"""What every runbook flow shares: the run context and its record, the approval → guarded execution →
communication → post-mortem sequence, and the driver that turns the outcome into the run's final state.

Terminal states (all runbooks):
- resolved / dry-run / nothing to do → Completed.
- approval rejected → Completed ("rejected by <approver>; no action taken"): a person decided.
- approval timed out, no diagnosis, or the guard refused every planned action → Failed (escalated):
  nobody acted on a live incident, which must stand out in the runs list (Prefect also fails a run
  whose pause timed out, so this stays consistent with the orchestrator).
- recovery or verification failed → Failed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, ParamSpec, Protocol, TypeVar
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, Completed, Failed, State

from flows import chatops
from flows.approval import ApprovalCancelled
from flows.artifacts import Progress, artifact_key, clean, publish_markdown, publish_raw_markdown
from flows.postmortem import build_postmortem, postmortem_flow
from flows.steps import declared_steps
from k8s_runbooks.communicate import StatusUpdate, UpdateKind, render_status_update
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.guard import read_audit
from k8s_runbooks.models import Action, ActionKind, ActionResult, ApprovalMode, Decision, Finding, HealthReport, Severity, WorkloadRef
from k8s_runbooks.postmortem.model import EvidenceItem, Outcome, RunRecord
from k8s_runbooks.postmortem.render import md_text
from k8s_runbooks.runbook_docs import load_runbook
from tasks.notify import notify
from tasks.remediation import execute_action, plan_is_allowed, wait_until_healthy


class StopRunbook(Exception):
    """Ends the runbook early on purpose (rejected, timed out, refused); not an error of the flow."""

    def __init__(self, outcome: Outcome, message: str, failed: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.failed = failed


class RunbookParams(Protocol):
    """What every runbook's parameter model has (PodCrashParams, HighLatencyParams, IncidentParams)."""

    namespace: str
    deployment: str
    approval: ApprovalMode
    approval_timeout_seconds: int
    drill: bool
    notes: str


P = TypeVar("P", bound=RunbookParams)
T = TypeVar("T")


@dataclass
class Run(Generic[P]):
    """One runbook run: its typed parameters and its journal (the run record the post-mortem is built from).
    Steps pass their results to each other as typed values; the journal only collects what they found."""

    flow: str
    params: P
    record: RunRecord
    flow_run_id: str
    run_url: str | None
    progress: Progress | None = None

    @property
    def target(self) -> WorkloadRef:
        return WorkloadRef(namespace=self.params.namespace, name=self.params.deployment)

    def save(self) -> None:
        publish_raw_markdown(artifact_key(self.flow, "record"), self.record.to_markdown(), "machine-readable run record (post-mortem source)")

    def evidence(self, step: str, title: str, kind: str, content: str) -> None:
        self.record.evidence.append(EvidenceItem(step=step, title=clean(title), kind=kind, content=clean(content)))  # type: ignore[arg-type]

    def finding(self, step: str, title: str, severity: Severity = Severity.warning, detail: str = "", **evidence: Any) -> Finding:
        safe = {k: clean(v) if isinstance(v, str) else v for k, v in evidence.items()}
        f = Finding(step=step, title=clean(title), severity=severity, detail=clean(detail), evidence=safe)
        self.record.findings.append(f)
        return f

    def note(self, event: str, detail: str = "", kind: str = "step") -> None:
        self.record.note(clean(event), clean(detail), kind)


@dataclass(frozen=True)
class Approval:
    """The action a person (or the approval mode) chose, and who."""

    action: Action
    actor: str


@dataclass(frozen=True)
class Recovery:
    """What executing the approved action did: the guard's result and, when it changed something, the health wait."""

    result: ActionResult
    health: HealthReport | None = None

    @property
    def executed(self) -> bool:
        return self.result.executed


def start_run(flow: str, runbook_path: Path, params: P) -> Run[P]:
    """The journal, the human runbook as an artifact and the progress bar of a new run."""
    runbook = load_runbook(runbook_path)
    record = RunRecord(flow=flow, runbook_title=runbook.title, namespace=params.namespace, deployment=params.deployment,
                       approval_mode=params.approval, drill=params.drill)
    run = Run(flow=flow, params=params, record=record, flow_run_id=str(runtime_flow_run.id), run_url=runtime_flow_run.ui_url)
    publish_raw_markdown(artifact_key(flow, "runbook"), runbook.markdown, f"The human runbook: {runbook.path}")
    run.progress = Progress(artifact_key(flow, "progress"), declared_steps(flow))
    run.note("Runbook started", f"approval={params.approval}" + (f"; notes: {params.notes}" if params.notes else ""))
    return run


# ------------------------------------------------------------------------------------ approval
def plan_markdown(run: Run[Any], plan: list[Action], checks: dict[str, str], decision_step: str, extra: str = "") -> str:
    lines = [f"## Evidence for {md_text(run.target)}\n", f"**Impact**: {md_text(run.record.impact)}\n"]
    lines += [f"- {md_text(f.title)}" for f in run.record.findings if f.step != decision_step] or ["- no findings"]
    lines += ["\n## Planned actions (most supported first)\n", "| id | action | evidence score | guard | why |", "|---|---|---|---|---|"]
    for a in plan:
        lines.append(f"| `{a.kind.value}` | {md_text(a.describe())} | {a.evidence_score:.2f} | {md_text(checks.get(a.kind.value, ''))} | {md_text(a.reason)} |")
    if extra:
        lines.append("\n" + extra)
    lines.append(f"\nApproval mode: **{run.params.approval}**. Approve to run the selected action; reject to change nothing.")
    return "\n".join(lines)


def seek_approval(run: Run[Any], step: str, plan: list[Action], extra_markdown: str = "") -> Approval:
    """Guard pre-check of `plan`, the plan artifact, then approval by mode. Raises StopRunbook when every
    action is refused, or the approval times out, is rejected or is answered without the form."""
    p = run.params
    checks: dict[str, str] = {}
    usable: list[Action] = []
    for action in plan:
        audit = plan_is_allowed(action, p.approval, "plan", run.flow_run_id)
        checks[action.kind.value] = f"{audit.decision.value}: {audit.reason}"
        if audit.decision is not Decision.refused:
            usable.append(action)
    plan_md = plan_markdown(run, plan, checks, step, extra_markdown)
    title = "Containment plan" if step == "contain" else "Resolution plan"
    publish_markdown(artifact_key(run.flow, step, "plan"), f"# {title}\n\n{plan_md}", "Ranked actions and guard pre-checks")
    run.note(f"{title} ready", "; ".join(f"{a.kind.value} ({a.evidence_score:.2f}): {checks[a.kind.value]}" for a in plan))
    if not usable:
        run.finding(step, "Every planned action was refused by the guard", Severity.critical,
                    detail="; ".join(checks.values()), kind="escalation")
        raise StopRunbook("escalated", "every planned action was refused by the guard; escalated", failed=True)

    if p.approval == "auto":
        run.note(f"Approved automatically: {usable[0].kind.value}", "approval mode auto (drill or pre-approved route)", "approval")
        return Approval(usable[0], "auto")
    if p.approval == "dry-run":
        run.note(f"Dry run: would perform {usable[0].kind.value}", usable[0].describe(), "approval")
        return Approval(usable[0], "dry-run")

    ids = [a.kind.value for a in usable]
    run.note("Approval requested", f"options: {', '.join(ids)}; timeout {p.approval_timeout_seconds} s", "approval")
    run.save()
    try:
        answer = chatops.request_approval(run, clean(plan_md), usable, checks)  # Slack, escalation, verified approvers
    except ApprovalCancelled as exc:  # the alert resolved while the run waited: nothing may be done
        run.note("Cancelled while waiting for approval", f"{exc}; nothing was changed", "approval")
        raise StopRunbook("cancelled", f"{exc}", failed=False) from None
    if answer.timed_out:
        run.note("Approval timed out; escalated", f"no answer within {p.approval_timeout_seconds} s; nothing was changed", "escalation")
        run.finding(step, "Approval timed out", Severity.critical,
                    detail=f"no approval within {p.approval_timeout_seconds} s", kind="escalation")
        raise StopRunbook("escalated", "approval timed out; escalated", failed=True)
    if answer.unanswered:
        run.note("Resumed without an answer to the approval form; escalated", "only the approval form approves; nothing was changed", "escalation")
        run.finding(step, "Resumed without an approval", Severity.critical,
                    detail="the run was resumed without the form's answer (a bare resume or a forced state)", kind="escalation")
        raise StopRunbook("escalated", "resumed without an answer to the approval form; no action taken; escalated", failed=True)
    if answer.void_reason:
        run.finding(step, "The approval acts on nothing", Severity.critical, detail=answer.void_reason, kind="escalation")
        raise StopRunbook("escalated", f"approval by {answer.approver} acts on nothing: {answer.void_reason}; escalated", failed=True)
    if not answer.approved:
        run.note(f"Rejected by {answer.approver}", answer.comment or "no comment", "approval")
        run.finding(step, f"Plan rejected by {answer.approver}", Severity.info, detail=answer.comment or "no comment", kind="approval_rejected")
        raise StopRunbook("rejected", f"rejected by {answer.approver}; no action taken", failed=False)
    chosen = next(a for a in usable if a.kind.value == answer.action)
    run.note(f"Approved by {answer.approver}: {chosen.kind.value}", answer.comment or chosen.describe(), "approval")
    return Approval(chosen, answer.approver)


# ------------------------------------------------------------------------------------ execution
def execute_and_wait(run: Run[Any], step: str, approval: Approval) -> Recovery:
    """Run the approved action through the guard, then wait until the workload is healthy (unless nothing
    was executed: dry-run)."""
    p = run.params
    action = approval.action
    result = execute_action(action, p.approval, approval.actor, run.flow_run_id)
    run.record.actions.append(result)
    run.note(f"Action {result.decision.value}: {action.describe()}", result.detail, "action")
    if result.decision is Decision.refused:
        raise StopRunbook("escalated", f"the guard refused {action.kind.value}: {result.detail}; escalated", failed=True)
    if result.decision is Decision.dry_run or not result.executed:
        run.record.outcome, run.record.outcome_detail = "dry-run", "plan and audit recorded; nothing was changed"
        return Recovery(result)
    expected = action.replicas if action.kind is ActionKind.scale else None
    health = wait_until_healthy(p.namespace, action.target.name, expected_replicas=expected,
                                stable_seconds=getattr(p, "stable_seconds", 20), timeout_seconds=getattr(p, "recovery_timeout_seconds", 180))
    run.evidence(step, "Health after the action", "text", health.model_dump_json(indent=1))
    if not health.healthy:
        run.note("Recovery failed", health.detail, "escalation")
        raise RunbookError(f"{action.target} did not become healthy within {getattr(p, 'recovery_timeout_seconds', 180)} s: {health.detail}")
    # Stamped when the workload settled (what `kubectl rollout status` reports), not when the stability window
    # that confirms it ended: that is the time to recover.
    settled = f"settled {health.settled_after_seconds:.1f} s after the action; " if health.settled_after_seconds is not None else ""
    run.record.note(f"Recovered: {health.ready_replicas}/{health.desired_replicas} ready, restarts stable",
                    f"{settled}restarts stable for {getattr(p, 'stable_seconds', 20):g} s after that (waited {health.waited_seconds:.0f} s)",
                    "recovered", at=health.settled_at)
    run.record.outcome, run.record.outcome_detail = "mitigated", f"{action.describe()} by {approval.actor}"
    return Recovery(result, health)


# ------------------------------------------------------------------------------------ communication
UPDATE_KIND: dict[str, UpdateKind] = {
    "resolved": "resolved", "mitigated": "mitigated", "escalated": "escalated", "failed": "escalated",
    "rejected": "escalated", "dry-run": "opened", "in-progress": "opened", "cancelled": "resolved",
}


def send_update(run: Run[Any], update: StatusUpdate, key: str) -> bool:
    """Store the rendered update as an artifact and post it to the webhook; a failed post is noted, not raised."""
    text = clean(render_status_update(update))
    publish_markdown(key, text, f"Status update: {update.kind}")
    sent = False
    try:
        sent = notify(text)
    except RunbookError as exc:  # a failed notification must not hide the incident's outcome
        run.note("Status update could not be sent", str(exc), "communication")
    run.note(f"Status update ({update.kind}) {'sent' if sent else 'stored as artifact'}", update.summary, "communication")
    chatops.send_elsewhere(run, update)
    return sent


def communicate_outcome(run: Run[Any]) -> None:
    rec = run.record
    update = StatusUpdate(
        kind=UPDATE_KIND[rec.outcome],
        target=str(run.target),
        summary=f"{run.flow} runbook: {rec.outcome}" + (f" — {rec.outcome_detail}" if rec.outcome_detail else ""),
        impact=rec.impact,
        actions=[f"{r.action.describe()} ({r.decision.value}{', executed' if r.executed else ''})" for r in rec.actions],
        run_url=run.run_url,
        drill=rec.drill,
        runbook=run.flow,
    )
    send_update(run, update, artifact_key(run.flow, "communicate", "status"))


# ------------------------------------------------------------------------------------ the driver
def _mark_failed(flow_run_id: str, message: str) -> None:
    """After a pause timeout the server has already failed the run ("never resumed") and ignores the
    engine's final state; force ours so the run says why it failed."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Failed(message=message), force=True)


A = ParamSpec("A")


def step(run: Run[Any], fn: Callable[A, T], *args: A.args, **kwargs: A.kwargs) -> T:
    """Run one runbook step (a `@runbook_step` function): progress bar, timeline, journal saved after it;
    its typed result is the next step's input."""
    step_id = fn.runbook_step  # type: ignore[attr-defined]
    assert run.progress is not None
    run.progress.start(step_id)
    run.note(f"Step {step_id} started")
    try:
        return fn(*args, **kwargs)
    finally:
        run.progress.finish(step_id)
        run.save()


def drive(
    run: Run[Any],
    body: Callable[[], object],
    communicate: Callable[[Run[Any]], None],
    *,
    before_communicate: Callable[[Run[Any]], None] | None = None,
    write_postmortem: bool = True,
) -> State:
    """Run the steps (`body` calls them in order, passing each one's result on), then always communicate,
    record the audit and write the post-mortem; return the run's final state."""
    record = run.record
    stop: StopRunbook | None = None
    error: Exception | None = None
    try:
        body()
    except StopRunbook as exc:
        stop = exc
        record.outcome, record.outcome_detail = exc.outcome, exc.message
    except Exception as exc:  # noqa: BLE001 - recorded, communicated, post-mortem written, then re-raised
        error = exc
        record.outcome, record.outcome_detail = "failed", clean(str(exc))
        run.note("Runbook failed", str(exc), "escalation")

    if before_communicate is not None:
        try:
            before_communicate(run)
        except Exception as exc:  # noqa: BLE001 - charts and extras never mask the incident outcome
            get_run_logger().error("post-run extras failed: %s", exc)
            run.note("Charts could not be produced", str(exc), "note")
    step(run, communicate, run)
    if record.outcome == "in-progress":
        record.outcome = "resolved"
    run.note(f"Runbook finished: {record.outcome}", record.outcome_detail)
    chatops.finish(run)  # the Slack message shows the outcome; a page resolves with the run
    record.audit = read_audit(run.flow_run_id)
    run.save()
    if write_postmortem:
        try:
            postmortem_flow(run_id=run.flow_run_id)
        except Exception as exc:  # noqa: BLE001 - the CLI can rebuild it; never mask the incident outcome
            get_run_logger().error("post-mortem could not be written: %s", exc)

    if error is not None:
        raise error
    if stop is not None:
        if stop.outcome == "cancelled":
            return Cancelled(message=stop.message)
        if stop.failed:
            _mark_failed(run.flow_run_id, stop.message)
            return Failed(message=stop.message)
        return Completed(message=stop.message)
    return Completed(message=f"{record.outcome}: {record.outcome_detail}" if record.outcome_detail else record.outcome)


def run_and_build(flow_fn: Callable[..., Any], params: Any) -> tuple[str, State, Path | None]:
    """Run a flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    state = flow_fn(params, return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    try:
        path: Path | None = build_postmortem(flow_run_id)
    except RunbookError:
        path = None
    return flow_run_id, state, path


def read_record(flow_run_id: str) -> RunRecord | None:
    """The newest run record artifact of a flow run (a subflow's, read by its parent)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
    records = sorted((a for a in artifacts if a.key and a.key.endswith("-record") and isinstance(a.data, str)),
                     key=lambda a: str(a.created))
    return RunRecord.from_markdown(records[-1].data) if records else None
