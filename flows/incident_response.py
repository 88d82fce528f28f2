"""The incident-response plan as one parent flow: identify → contain → eradicate → recover → communicate.

Identification classifies the incident: a manual `kind`, the alert's name, or the diagnosis engine's most
likely cause (crash, OOM, probes, a bad revision, zero replicas → pod-crash; latency causes → high-latency;
pending pods, startup failures, unreachable services and node faults that no runbook action fixes → the
diagnosis-and-escalation path, which states the exact change a person must make). It sends the "opened"
update; containment dispatches the matching runbook as a subflow (its own steps and approvals) or
escalates; eradication and recovery take stock of what the runbook did ("mitigated" update) and confirm
independently that the condition has cleared; communication sends the "resolved" (or "escalated") update,
and the flow writes one post-mortem, with charts, for the whole incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import State

from flows.artifacts import artifact_key
from flows.common import UPDATE_KIND, Run, StopRunbook, drive, read_record, run_and_build, send_update, start_run, step
from flows.diagnosis import Identified, escalate, identify_causes
from flows.high_latency import high_latency
from flows.params import HighLatencyParams, IncidentParams, PodCrashParams
from flows.pod_crash import pod_crash
from flows.snapshots import Scope, publish_charts
from flows.steps import runbook_step
from k8s_runbooks.communicate import StatusUpdate, UpdateKind
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.diagnosis.hypothesis import Cause, Layer
from k8s_runbooks.models import Severity
from k8s_runbooks.postmortem.model import RunRecord
from k8s_runbooks.prom import promql
from k8s_runbooks.runbook_docs import runbooks_dir
from tasks.metrics import crash_condition_active, prom_instant

# Identification and recovery ask the same question; Prefect's default cache policy would answer the
# second time from the first.
from tasks.sentry import sentry_on_failure

FLOW = "incident-response"
RUNBOOK_PATH = runbooks_dir() / "incident-response-plan.md"
ALERT_RUNBOOKS = {"PodCrashLooping": "pod-crash", "HighLatency": "high-latency"}
RUNBOOK_FLOWS: dict[str, Any] = {"pod-crash": (pod_crash, PodCrashParams), "high-latency": (high_latency, HighLatencyParams)}


# Causes the pod-crash runbook answers (it diagnoses the workload again and acts only where the action fixes
# the cause, escalating otherwise); latency causes go to the high-latency runbook; the rest is escalated here.
POD_CRASH_LAYERS = frozenset({Layer.runtime})
POD_CRASH_CAUSES = frozenset({Cause.crash_after_rollout, Cause.slow_revision})
LATENCY_CAUSES = frozenset({Cause.cpu_saturated, Cause.slow_revision, Cause.slow_pods, Cause.pod_network_delay})


@dataclass(frozen=True)
class Classification:
    runbook: str  # pod-crash | high-latency | "" (escalate with the diagnosis, or nothing found)
    why: str
    found: Identified | None = None


@dataclass(frozen=True)
class Dispatched:
    runbook: str
    run_id: str
    state: State
    record: RunRecord | None


def _update(run: Run[IncidentParams], kind: UpdateKind, summary: str, runbook: str = "") -> None:
    rec = run.record
    update = StatusUpdate(kind=kind, target=str(run.target), summary=summary, impact=rec.impact, run_url=run.run_url,
                          actions=[f"{r.action.describe()} ({r.decision.value}{', executed' if r.executed else ''})" for r in rec.actions],
                          drill=rec.drill, runbook=runbook, incident=run.params.alertname or run.flow_run_id)
    send_update(run, update, artifact_key(FLOW, "communicate", kind))


def _p95_breached(p: IncidentParams) -> tuple[bool, str]:
    query = promql.latency_quantile(p.namespace, p.service, 0.95, p.rate_window, service_label=p.service_label)
    result = prom_instant(query)
    values = [v for _, v in result.samples if v == v]
    return bool(values and values[0] * 1000 > p.p95_threshold_ms), (f"p95 {values[0] * 1000:.0f} ms" if values else "p95 no data")


def route(found: Identified, deployment: str) -> tuple[str, str]:
    """(runbook, why) for the engine's most likely cause."""
    top = found.top
    if top is None:
        return "", "no failure signature matched"
    why = f"diagnosis: {top.cause.value} on {top.object.kind}/{top.object.name} ({top.confidence:.2f})"
    if top.cause in LATENCY_CAUSES and top.object.name == deployment:
        return "high-latency", why
    if (top.layer in POD_CRASH_LAYERS or top.cause in POD_CRASH_CAUSES) and top.object.name == deployment:
        return "pod-crash", why
    lead = next((s for s in found.steps if s.cause is top.cause and s.object.name == top.object.name), None)
    if lead is not None and lead.action is not None and lead.action.target.name == deployment:
        return "pod-crash", why + "; the fix is a guarded action on the workload"
    return "", why


# ------------------------------------------------------------------------------------ 1. identify
@runbook_step(FLOW, "identify")
def identify(run: Run[IncidentParams]) -> Classification:
    """Classify the incident: manual kind, the alert's name, else the diagnosis engine's most likely cause."""
    p = run.params
    found: Identified | None = None
    alertname = p.alertname or p.alert_labels.get("alertname", "")
    if p.kind in ("pod-crash", "high-latency"):
        runbook, why = p.kind, f"chosen manually (kind={p.kind})"
    elif p.kind == "auto" and alertname in ALERT_RUNBOOKS:
        runbook, why = ALERT_RUNBOOKS[alertname], f"alert {alertname}"
    else:
        found = identify_causes(run, "identify", focus=p.deployment, symptom=f"{alertname} {p.notes}".strip())
        runbook, why = ("", found.top.summary) if p.kind == "diagnose" and found.top else route(found, p.deployment)
        if not runbook and found.top is None:
            crash = crash_condition_active(p.namespace, p.deployment, window=p.crash_window)
            slow, text = _p95_breached(p)
            if crash.breached:
                runbook, why = "pod-crash", f"crash-looping pods (PodCrashLooping condition = {crash.value:g})"
            elif slow:
                runbook, why = "high-latency", f"{text} above {p.p95_threshold_ms:g} ms"
            else:
                run.note("No incident found", f"{why}; no crash-looping pods and {text}", "note")
                run.record.outcome, run.record.outcome_detail = "resolved", f"no incident found: {why}; {text}"
                return Classification("", why)
    kind = runbook or "diagnosis-and-escalation"
    run.finding("identify", f"Incident classified as {kind}", Severity.info, detail=why, kind="classification", runbook=kind)
    run.record.note(f"Incident identified: {kind} on {p.namespace}/{p.deployment}", why, "detected")
    run.record.impact = run.record.impact or f"{kind} incident on {p.namespace}/{p.deployment} ({why})"
    _update(run, "opened", f"{kind} incident on {p.namespace}/{p.deployment}: {why}", runbook)
    return Classification(runbook, why, found)


# ------------------------------------------------------------------------------------ 2. contain
def _sub_params(run: Run[IncidentParams], runbook: str) -> Any:
    p = run.params
    common = {"namespace": p.namespace, "deployment": p.deployment, "approval": p.approval,
              "approval_timeout_seconds": p.approval_timeout_seconds, "drill": p.drill, "kube_context": p.kube_context,
              "notes": f"dispatched by incident-response run {run.flow_run_id}" + (f"; {p.notes}" if p.notes else "")}
    if runbook == "high-latency":
        common |= {"service": p.service, "service_label": p.service_label, "p95_threshold_ms": p.p95_threshold_ms,
                   "rate_window": p.rate_window, "chart_lookback_minutes": p.chart_lookback_minutes}
    _flow, model = RUNBOOK_FLOWS[runbook]
    return model.model_validate({**common, **p.runbook_overrides})


@runbook_step(FLOW, "contain")
def contain(run: Run[IncidentParams], cls: Classification) -> Dispatched | None:
    """Dispatch the runbook as a subflow, or escalate with the diagnosis when no runbook action fixes the cause."""
    if not cls.runbook:
        if cls.found is not None and cls.found.top is not None:
            escalate(run, "contain", cls.found)
        return None
    subflow, _model = RUNBOOK_FLOWS[cls.runbook]
    run.note(f"Dispatching the {cls.runbook} runbook", "as a subflow: containment, eradication and recovery follow its steps")
    run.save()
    state: State = subflow(_sub_params(run, cls.runbook), standalone=False, return_state=True)
    sub_run_id = str(state.state_details.flow_run_id)
    sub = read_record(sub_run_id)
    if sub is not None:
        run.record.impact = sub.impact or run.record.impact
    run.note(f"{cls.runbook} runbook finished: {state.name}", state.message or "")
    if sub is None:
        raise StopRunbook("failed", f"the {cls.runbook} runbook left no record ({state.name}: {state.message})", failed=True)
    if sub.outcome in ("escalated", "failed", "rejected"):
        failed = sub.outcome != "rejected"
        raise StopRunbook(sub.outcome, f"{cls.runbook} runbook {sub.outcome}: {sub.outcome_detail}", failed=failed)
    return Dispatched(cls.runbook, sub_run_id, state, sub)


# ------------------------------------------------------------------------------------ 3. eradicate
@runbook_step(FLOW, "eradicate")
def eradicate(run: Run[IncidentParams], done: Dispatched | None) -> None:
    """Take stock of what the runbook changed and send the "mitigated" update."""
    sub = done.record if done else None
    if done is None or sub is None:
        return
    executed = [a for a in sub.actions if a.executed]
    if sub.outcome == "dry-run" or not executed:
        run.record.outcome, run.record.outcome_detail = sub.outcome, sub.outcome_detail or "nothing was changed"
        return
    causes = [h.summary for h in sub.hypotheses[:1]] or [f.title for f in sub.findings if f.severity is Severity.critical][:3]
    run.note("Cause removed", "; ".join(a.action.describe() for a in executed) + (f" — evidence: {'; '.join(causes)}" if causes else ""))
    _update(run, "mitigated", f"{done.runbook} runbook: {'; '.join(a.action.describe() for a in executed)}", done.runbook)


# ------------------------------------------------------------------------------------ 4. recover
@runbook_step(FLOW, "recover")
def recover(run: Run[IncidentParams], done: Dispatched | None) -> None:
    """Confirm independently (Prometheus) that the incident's condition has cleared."""
    p = run.params
    if done is None or done.record is None or run.record.outcome == "dry-run":
        return
    if done.runbook == "pod-crash":
        check = crash_condition_active(p.namespace, p.deployment, window=p.crash_window)
        clear, text = not (check.breached or check.no_data), f"PodCrashLooping condition = {check.value}"
    else:
        slow, text = _p95_breached(p)
        clear = not slow
    if not clear:
        raise RunbookError(f"the {done.runbook} condition of {p.namespace}/{p.deployment} is still active: {text}")
    run.record.note(f"Incident recovered: {text}", f"confirmed by the incident-response flow after the {done.runbook} runbook", "recovered")
    run.record.outcome, run.record.outcome_detail = "resolved", f"{done.runbook} runbook: {done.record.outcome_detail or done.record.outcome}"


# ------------------------------------------------------------------------------------ 5. communicate
@runbook_step(FLOW, "communicate")
def communicate(run: Run[IncidentParams]) -> None:
    """The "resolved" (or "escalated") update to the configured channel."""
    rec = run.record
    _update(run, UPDATE_KIND[rec.outcome], f"incident {rec.outcome}" + (f" — {rec.outcome_detail}" if rec.outcome_detail else ""))


def _charts(run: Run[IncidentParams], sub: list[RunRecord]) -> None:
    p = run.params
    scope = Scope(namespace=p.namespace, service=p.service, deployment=p.deployment, service_label=p.service_label,
                  rate_window=p.rate_window, threshold_ms=p.p95_threshold_ms, lookback_minutes=p.chart_lookback_minutes)
    publish_charts(run, scope, [run.record] + sub)


@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def incident_response(params: IncidentParams) -> State:
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        run = start_run(FLOW, RUNBOOK_PATH, params)
        subs: list[RunRecord] = []

        def body() -> None:
            cls = step(run, identify, run)
            done = step(run, contain, run, cls)
            if done is not None and done.record is not None:
                subs.append(done.record)
            step(run, eradicate, run, done)
            step(run, recover, run, done)

        return drive(run, body, communicate, before_communicate=lambda r: _charts(r, subs))


def run_incident(params: IncidentParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(incident_response, params)
