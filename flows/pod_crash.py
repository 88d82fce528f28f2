"""The pod-crash runbook as a Prefect flow: identify → contain (approval) → recover → verify → communicate.

Each step is bound to a step of runbooks/pod-crash.md by `@runbook_step`; the binding test keeps both sides
in sync, down to the tasks each step calls. Steps pass typed results (`Identified` → `Approval` →
`Recovery`); the journal (`RunRecord`, artifact `pod-crash-record`) collects what they find, so the
post-mortem can be rebuilt from Prefect for any run, even a failed one.

The diagnosis engine decides what is wrong; the plan proposes only the action that fixes that cause (roll
back a revision that brought it, raise a memory limit, scale back from zero, ...) or escalates with the exact
change when no action of this runbook fixes it (a missing Secret, a taint, a quota, a crash with no new
revision). A restart is never proposed for a cause a restart cannot fix. Containment options (traffic to the
stable revision, feature flags off, scale to zero) are offered after the fix, for a person to choose
(flows/containment.py).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import State

from flows.artifacts import artifact_key, publish_link, publish_table
from flows.common import Recovery, Run, communicate_outcome, drive, run_and_build, start_run, step
from flows.concurrency import remediation_slot
from flows.containment import Choice, Condition, carry_out, choose
from flows.diagnosis import Identified, identify_causes, recheck
from flows.params import PodCrashParams
from flows.steps import runbook_step
from k8s_runbooks.diagnosis.evidence import Pod
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.models import Severity, utcnow
from k8s_runbooks.prom import promql
from k8s_runbooks.runbook_docs import runbooks_dir
from tasks.metrics import crash_condition_active, restart_rate
from tasks.sentry import recent_sentry_issues, sentry_on_failure

FLOW = "pod-crash"
RUNBOOK_PATH = runbooks_dir() / "pod-crash.md"
SYMPTOM = "Service abnormal restart. PodCrashLooping"
VERIFY_POLL_SECONDS = 5.0


# ------------------------------------------------------------------------------------ 1. identify
def _in_trouble(x: Pod) -> bool:
    """Not running, a container unready, or a restart in the last 15 minutes (and not on its way out)."""
    return (x.status not in ("Running", "Completed", "Succeeded") or any(not c.ready for c in x.containers if not c.init)
            or (x.last_restart_age_seconds is not None and x.last_restart_age_seconds < 900)) and not x.terminating


def _pods_table(run: Run[PodCrashParams], found: Identified) -> int:
    """The workload's pods as the evidence shows them; returns how many are in trouble."""
    p = run.params
    pods = [x for x in found.evidence.pods if x.workload == p.deployment]
    rows = []
    troubled = 0
    for x in pods:
        unhealthy = _in_trouble(x)
        troubled += unhealthy
        rows.append({"pod": x.name, "status": x.status, "node": x.node, "restarts": sum(c.restart_count for c in x.containers),
                     "unhealthy": unhealthy, "owner": str(x.owner) if x.owner else "",
                     "last termination": ", ".join(f"{c.name}: {c.last_state.reason} ({c.last_state.exit_code})"
                                                   for c in x.containers if c.last_state and c.last_state.reason)})
    publish_table(artifact_key(FLOW, "identify", "pods"), rows, f"Pods of {run.target}")
    wl = next((w for w in found.evidence.workloads if w.name == p.deployment), None)
    desired = wl.replicas if wl and wl.replicas is not None else len(pods)
    ready = wl.ready_replicas if wl and wl.ready_replicas is not None else sum(1 for r in rows if not r["unhealthy"])
    run.record.impact = f"{troubled} of {desired} replicas of {p.namespace}/{p.deployment} in trouble; {ready} of {desired} ready at detection"
    return troubled


@runbook_step(FLOW, "identify")
def identify(run: Run[PodCrashParams]) -> Identified:
    """Evidence of the namespace, the ranked causes (diagnosis engine), restart rate and Sentry issues."""
    p = run.params
    log = get_run_logger()
    found = identify_causes(run, "identify", focus=p.deployment, symptom=SYMPTOM)
    troubled = _pods_table(run, found)
    try:
        rate = restart_rate(p.namespace, p.deployment)
        run.evidence("identify", "Restart rate (Prometheus)", "query", rate.query + "\n" + "\n".join(
            f"{labels.get('pod', labels)} {value:g}" for labels, value in rate.samples))
    except RunbookError as exc:  # metrics enrich the diagnosis; the cluster is the source of truth
        log.warning("restart rate unavailable: %s", exc)
        run.note("Prometheus restart rate unavailable", str(exc), "note")
    end = utcnow()
    try:
        issues = recent_sentry_issues(p.deployment, end - timedelta(minutes=p.incident_window_minutes), end)
    except RunbookError as exc:
        log.warning("Sentry issues unavailable: %s", exc)
        run.note("Sentry issues unavailable", str(exc), "note")
        issues = []
    for issue in issues:
        run.finding("identify", f"Sentry issue {issue.short_id or issue.id}: {issue.title}", Severity.warning,
                    detail=f"{issue.count or '?'} events", kind="sentry_issue", short_id=issue.short_id or issue.id, permalink=issue.permalink or "")
        if issue.permalink:
            publish_link(artifact_key(FLOW, "identify", "sentry", issue.short_id or issue.id), issue.permalink, f"Sentry {issue.short_id or issue.id}: {issue.title}")
    if issues:
        run.evidence("identify", "Sentry issues in the incident window", "sentry", "\n".join(f"{i.short_id or i.id} {i.title} {i.permalink or ''}" for i in issues))
    logs = [x for x in found.evidence.logs if x.workload == p.deployment]
    for excerpt in logs[:4]:
        run.evidence("identify", f"Log of {excerpt.pod}/{excerpt.container}{' (previous container)' if excerpt.previous else ''}", "log",
                     "\n".join(excerpt.lines[-50:]))
    events = [e for e in found.evidence.events if e.type == "Warning" and (e.object.name.startswith(p.deployment + "-") or e.object.name == p.deployment)]
    if events:
        run.evidence("identify", f"Warning events of {p.deployment}'s pods and controllers", "events", "\n".join(
            f"{e.object.kind}/{e.object.name} {e.reason}: {e.message} (x{e.count})" for e in events[:30]))
    if troubled:
        run.record.note(f"Incident detected: {troubled} pod(s) of {p.namespace}/{p.deployment} in trouble",
                        found.top.summary if found.top else "no signature matched", "detected")
    else:
        run.note(f"No pod of {p.namespace}/{p.deployment} is in trouble", kind="note")
    return found


# ------------------------------------------------------------------------------------ 2. contain
@runbook_step(FLOW, "contain")
def contain(run: Run[PodCrashParams], found: Identified) -> Choice | None:
    """The action that fixes the diagnosed cause, with the containment options (redirect traffic, flags off,
    scale to zero) as alternatives, approved by mode; with no fix, the containment options for a person, then an
    escalation with the exact change; nothing when nothing is wrong."""
    top, p = found.top, run.params
    if top is None and not any(x.workload == p.deployment and x.status not in ("Running", "Completed") for x in found.evidence.pods):
        run.record.outcome, run.record.outcome_detail = "resolved", "no pod in trouble and no failure signature: nothing to contain"
        return None
    if top is not None and top.object.name != p.deployment and top.details.get("workload") != p.deployment \
            and _target_healthy(found, p.deployment):
        # Another workload's fault in the namespace is not this incident: its own alert brings its own run.
        run.note(f"Not this incident: {top.cause.value} on {top.object.kind}/{top.object.name}",
                 f"{p.namespace}/{p.deployment} has every replica ready and no pod in trouble", "note")
        run.record.outcome, run.record.outcome_detail = "resolved", (
            f"every replica of {p.namespace}/{p.deployment} is ready and none is in trouble: nothing to contain "
            f"(seen elsewhere in the namespace: {top.cause.value} on {top.object.kind}/{top.object.name})")
        return None
    return choose(run, "contain", found)


def _target_healthy(found: Identified, deployment: str) -> bool:
    """The runbook's Deployment wants pods, has them all ready on its current revision (a rollout held back, e.g.
    by a quota, is not healthy), and none restarted recently or is unready."""
    wl = next((w for w in found.evidence.workloads if w.name == deployment), None)
    if wl is None or not wl.replicas or (wl.ready_replicas or 0) < wl.replicas:
        return False
    if wl.updated_replicas is not None and wl.updated_replicas < wl.replicas:
        return False
    return not any(_in_trouble(x) for x in found.evidence.pods if x.workload == deployment)


# ------------------------------------------------------------------------------------ 3. recover
@runbook_step(FLOW, "recover")
def recover(run: Run[PodCrashParams], found: Identified, choice: Choice | None) -> Recovery | None:
    """Re-check when the approval came later, then run the action through the guard and wait for health; after a
    containment, the fix, then the containment undone (a scale-back validated step by step)."""
    if choice is None:
        return None
    p = run.params
    condition = Condition(promql.crash_looping(p.namespace, p.deployment, f"{p.verify_window_seconds}s"))
    return carry_out(run, "recover", choice, found,
                     lambda: recheck(run, "recover", found, focus=p.deployment, symptom=SYMPTOM), condition)


# ------------------------------------------------------------------------------------ 4. verify
@runbook_step(FLOW, "verify")
def verify(run: Run[PodCrashParams], recovery: Recovery | None) -> None:
    """The crash alert condition has cleared (Prometheus), waiting for it when something was changed."""
    p = run.params
    if recovery is None:
        return
    window = f"{p.verify_window_seconds}s"
    deadline = time.monotonic() + p.verify_timeout_seconds
    while True:
        check = crash_condition_active(p.namespace, p.deployment, window=window)
        active = check.breached or check.no_data
        if not active or not recovery.executed or time.monotonic() >= deadline:
            break
        time.sleep(VERIFY_POLL_SECONDS)
    state = "no data" if check.no_data else ("active" if check.breached else "clear")
    run.evidence("verify", "Crash alert condition (Prometheus)", "query", f"{check.query}\nvalue={check.value} -> {state}")
    if not recovery.executed:
        run.note(f"Crash condition is {state} (dry run: not waited for)", f"value {check.value} over the last {window}", "note")
        return
    if active:
        raise RunbookError(f"the crash condition of {run.target} is still {state} after {p.verify_timeout_seconds} s")
    run.note("Verified: crash alert condition is clear", f"PodCrashLooping condition = {check.value} over the last {window}", "recovered")
    if run.record.outcome in ("mitigated", "in-progress"):
        run.record.outcome = "resolved"


# ------------------------------------------------------------------------------------ 5. communicate
@runbook_step(FLOW, "communicate")
def communicate(run: Run[PodCrashParams]) -> None:
    """Status update to the configured channel (artifact + webhook)."""
    communicate_outcome(run)


# ------------------------------------------------------------------------------------ the flow
@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def pod_crash(params: PodCrashParams, standalone: bool = True) -> State:
    """`standalone=False` when a parent flow (the incident response) writes one post-mortem for the whole incident."""
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        run = start_run(FLOW, RUNBOOK_PATH, params)

        def body() -> None:
            found = step(run, identify, run)
            choice = step(run, contain, run, found)
            recovery = step(run, recover, run, found, choice)
            step(run, verify, run, recovery)

        # One runbook per workload at a time, identify included: a run that waited re-reads the cluster and
        # finds the earlier run's fix instead of acting (e.g. undoing its roll-back) on stale evidence.
        with remediation_slot(run.target):
            return drive(run, body, communicate, write_postmortem=standalone)


def run_pod_crash(params: PodCrashParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(pod_crash, params)
