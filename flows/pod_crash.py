"""The pod-crash runbook as a Prefect flow: identify → contain (approval) → recover → verify → communicate.

Each step is bound to a step of runbooks/pod-crash.md by `@runbook_step`; the binding test keeps both
sides in sync. Everything the run learns goes into a `RunRecord` artifact (`pod-crash-record`) updated
after every step, so the post-mortem can be rebuilt from Prefect for any run, even a failed one.

Terminal states and the approval → execution → communication sequence are shared with the other
runbooks (flows/common.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import State

from flows.artifacts import artifact_key, publish_link, publish_markdown, publish_table
from flows.common import RunCtx, communicate_outcome, drive, execute_and_wait, run_and_build, seek_approval, start_run
from flows.concurrency import remediation_slot
from flows.params import PodCrashParams
from flows.steps import runbook_step
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.models import Action, ActionKind, PodDiagnosis, Severity, WorkloadStatus, utcnow
from k8s_runbooks.postmortem.render import md_code_block, md_text
from k8s_runbooks.runbook_docs import runbooks_dir
from tasks.events import object_events
from tasks.logs import container_logs
from tasks.metrics import crash_condition_active, restart_rate
from tasks.pods import find_unhealthy_pods, workload_status
from tasks.sentry import recent_sentry_issues, sentry_on_failure

FLOW = "pod-crash"
RUNBOOK_PATH = runbooks_dir() / "pod-crash.md"
MAX_PODS_EXAMINED = 5  # describe/logs/events per pod are the expensive part; five show the pattern
VERIFY_POLL_SECONDS = 5.0


@dataclass
class Ctx(RunCtx):
    status: WorkloadStatus | None = None
    pods: list[PodDiagnosis] = field(default_factory=list)
    bad_rollout: bool = False


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


@runbook_step(FLOW, "contain")
def contain(ctx: Ctx) -> None:
    ctx.plan = rank_actions(ctx)
    if not ctx.plan:
        ctx.record.outcome, ctx.record.outcome_detail = "resolved", "no crashing pods found; nothing to contain"
        publish_markdown(artifact_key(FLOW, "contain", "plan"), "# Plan\n\nNo crashing pods: nothing to do.")
        return

    seek_approval(ctx, "contain")


# ------------------------------------------------------------------------------------ 3. recover
@runbook_step(FLOW, "recover")
def recover(ctx: Ctx) -> None:
    execute_and_wait(ctx, "recover")


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
@runbook_step(FLOW, "communicate")
def communicate(ctx: Ctx) -> None:
    communicate_outcome(ctx)


# ------------------------------------------------------------------------------------ the flow
@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def pod_crash(params: PodCrashParams, standalone: bool = True) -> State:
    """`standalone=False` when a parent flow (the incident response) writes one post-mortem for the whole incident."""
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        ctx = start_run(Ctx, FLOW, RUNBOOK_PATH, params)
        # One runbook per workload at a time, identify included: a run that waited re-reads the cluster and
        # finds the earlier run's fix instead of acting (e.g. undoing its roll-back) on stale evidence.
        with remediation_slot(ctx.target):
            return drive(ctx, (identify, contain, recover, verify), communicate, write_postmortem=standalone)


def run_pod_crash(params: PodCrashParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(pod_crash, params)
