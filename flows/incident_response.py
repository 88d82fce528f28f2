"""The incident-response plan as one parent flow: identify → contain → eradicate → recover → communicate.

Identification classifies the incident (alert labels, manual `kind`, or by looking: crash-looping pods
before p95 over the threshold) and sends the "opened" update; containment dispatches the matching
runbook (pod-crash or high-latency) as a subflow, which does containment, eradication and recovery by
its own steps and approvals; eradication and recovery take stock of what it did ("mitigated" update)
and confirm independently that the condition has cleared; communication sends the "resolved" (or
"escalated") update, and the flow writes one post-mortem, with charts, for the whole incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import State

from flows.artifacts import artifact_key
from flows.common import UPDATE_KIND, RunCtx, StopRunbook, drive, read_record, run_and_build, send_update, start_run
from flows.high_latency import high_latency
from flows.params import HighLatencyParams, IncidentParams, PodCrashParams
from flows.pod_crash import pod_crash
from flows.snapshots import Scope, publish_charts
from flows.steps import runbook_step
from k8s_runbooks.communicate import StatusUpdate, UpdateKind
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import kube_context
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


@dataclass
class Ctx(RunCtx):
    runbook: str = ""
    sub_run_id: str = ""
    sub_state: State | None = None
    sub_record: RunRecord | None = None


def _update(ctx: Ctx, kind: UpdateKind, summary: str) -> None:
    rec = ctx.record
    update = StatusUpdate(kind=kind, target=str(ctx.target), summary=summary, impact=rec.impact, run_url=ctx.run_url,
                          actions=[f"{r.action.describe()} ({r.decision.value}{', executed' if r.executed else ''})" for r in rec.actions],
                          drill=rec.drill, runbook=ctx.runbook, incident=ctx.params.alertname or ctx.flow_run_id)
    send_update(ctx, update, artifact_key(FLOW, "communicate", kind))


def _p95_breached(p: IncidentParams) -> tuple[bool, str]:
    query = promql.latency_quantile(p.namespace, p.service, 0.95, p.rate_window, service_label=p.service_label)
    result = prom_instant(query)
    values = [v for _, v in result.samples if v == v]
    return bool(values and values[0] * 1000 > p.p95_threshold_ms), (f"p95 {values[0] * 1000:.0f} ms" if values else "p95 no data")


def classify(p: IncidentParams) -> tuple[str, str]:
    """(runbook, why): manual kind, then the alert's name, then by looking at the workload."""
    if p.kind != "auto":
        return p.kind, f"chosen manually (kind={p.kind})"
    alertname = p.alertname or p.alert_labels.get("alertname", "")
    if alertname in ALERT_RUNBOOKS:
        return ALERT_RUNBOOKS[alertname], f"alert {alertname}"
    crash = crash_condition_active(p.namespace, p.deployment, window=p.crash_window)
    if crash.breached:
        return "pod-crash", f"crash-looping pods (PodCrashLooping condition = {crash.value:g})"
    slow, text = _p95_breached(p)
    if slow:
        return "high-latency", f"{text} above {p.p95_threshold_ms:g} ms"
    return "", f"no crash-looping pods and {text} (threshold {p.p95_threshold_ms:g} ms)"


# ------------------------------------------------------------------------------------ 1. identify
@runbook_step(FLOW, "identify")
def identify(ctx: Ctx) -> None:
    p = ctx.params
    runbook, why = classify(p)
    if not runbook:
        ctx.note("No incident found", why, "note")
        ctx.record.outcome, ctx.record.outcome_detail = "resolved", f"no incident found: {why}"
        return
    ctx.runbook = runbook
    ctx.finding("identify", f"Incident classified as {runbook}", Severity.info, detail=why, kind="classification", runbook=runbook)
    ctx.record.note(f"Incident identified: {runbook} on {p.namespace}/{p.deployment}", why, "detected")
    ctx.record.impact = f"{runbook} incident on {p.namespace}/{p.deployment} ({why})"
    _update(ctx, "opened", f"{runbook} incident on {p.namespace}/{p.deployment}: {why}")


# ------------------------------------------------------------------------------------ 2. contain
def _sub_params(ctx: Ctx) -> Any:
    p = ctx.params
    common = {"namespace": p.namespace, "deployment": p.deployment, "approval": p.approval,
              "approval_timeout_seconds": p.approval_timeout_seconds, "drill": p.drill, "kube_context": p.kube_context,
              "notes": f"dispatched by incident-response run {ctx.flow_run_id}" + (f"; {p.notes}" if p.notes else "")}
    if ctx.runbook == "high-latency":
        common |= {"service": p.service, "service_label": p.service_label, "p95_threshold_ms": p.p95_threshold_ms,
                   "rate_window": p.rate_window, "chart_lookback_minutes": p.chart_lookback_minutes}
    _flow, model = RUNBOOK_FLOWS[ctx.runbook]
    return model.model_validate({**common, **p.runbook_overrides})


@runbook_step(FLOW, "contain")
def contain(ctx: Ctx) -> None:
    if not ctx.runbook:
        return
    subflow, _model = RUNBOOK_FLOWS[ctx.runbook]
    ctx.note(f"Dispatching the {ctx.runbook} runbook", "as a subflow: containment, eradication and recovery follow its steps")
    ctx.save()
    state: State = subflow(_sub_params(ctx), standalone=False, return_state=True)
    ctx.sub_state = state
    ctx.sub_run_id = str(state.state_details.flow_run_id)
    ctx.sub_record = read_record(ctx.sub_run_id)
    sub = ctx.sub_record
    if sub is not None:
        ctx.record.impact = sub.impact or ctx.record.impact
    ctx.note(f"{ctx.runbook} runbook finished: {state.name}", state.message or "")
    if sub is None:
        raise StopRunbook("failed", f"the {ctx.runbook} runbook left no record ({state.name}: {state.message})", failed=True)
    if sub.outcome in ("escalated", "failed", "rejected"):
        failed = sub.outcome != "rejected"
        raise StopRunbook(sub.outcome, f"{ctx.runbook} runbook {sub.outcome}: {sub.outcome_detail}", failed=failed)


# ------------------------------------------------------------------------------------ 3. eradicate
@runbook_step(FLOW, "eradicate")
def eradicate(ctx: Ctx) -> None:
    sub = ctx.sub_record
    if sub is None:
        return
    executed = [a for a in sub.actions if a.executed]
    if sub.outcome == "dry-run" or not executed:
        ctx.record.outcome, ctx.record.outcome_detail = sub.outcome, sub.outcome_detail or "nothing was changed"
        return
    causes = [f.title for f in sub.findings if f.severity is Severity.critical][:3]
    ctx.note("Cause removed", "; ".join(a.action.describe() for a in executed) + (f" — evidence: {'; '.join(causes)}" if causes else ""))
    _update(ctx, "mitigated", f"{ctx.runbook} runbook: {'; '.join(a.action.describe() for a in executed)}")


# ------------------------------------------------------------------------------------ 4. recover
@runbook_step(FLOW, "recover")
def recover(ctx: Ctx) -> None:
    p, sub = ctx.params, ctx.sub_record
    if sub is None or ctx.record.outcome == "dry-run":
        return
    if ctx.runbook == "pod-crash":
        check = crash_condition_active(p.namespace, p.deployment, window=p.crash_window)
        clear, text = not (check.breached or check.no_data), f"PodCrashLooping condition = {check.value}"
    else:
        slow, text = _p95_breached(p)
        clear = not slow
    if not clear:
        raise RunbookError(f"the {ctx.runbook} condition of {p.namespace}/{p.deployment} is still active: {text}")
    ctx.record.note(f"Incident recovered: {text}", f"confirmed by the incident-response flow after the {ctx.runbook} runbook", "recovered")
    ctx.record.outcome, ctx.record.outcome_detail = "resolved", f"{ctx.runbook} runbook: {sub.outcome_detail or sub.outcome}"


# ------------------------------------------------------------------------------------ 5. communicate
@runbook_step(FLOW, "communicate")
def communicate(ctx: Ctx) -> None:
    rec = ctx.record
    _update(ctx, UPDATE_KIND[rec.outcome], f"incident {rec.outcome}" + (f" — {rec.outcome_detail}" if rec.outcome_detail else ""))


def _charts(ctx: Ctx) -> None:
    p = ctx.params
    scope = Scope(namespace=p.namespace, service=p.service, deployment=p.deployment, service_label=p.service_label,
                  rate_window=p.rate_window, threshold_ms=p.p95_threshold_ms, lookback_minutes=p.chart_lookback_minutes)
    publish_charts(ctx, scope, [ctx.record] + ([ctx.sub_record] if ctx.sub_record else []))


@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def incident_response(params: IncidentParams) -> State:
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        ctx = start_run(Ctx, FLOW, RUNBOOK_PATH, params)
        return drive(ctx, (identify, contain, eradicate, recover), communicate, before_communicate=_charts)


def run_incident(params: IncidentParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(incident_response, params)
