"""Failure drills as Prefect flows: steady state → inject → respond → recover → rollback → score.

`drill-pod-crash` and `drill-latency` share one driver. Rollback runs whatever happens (response failed,
step error, cancellation): a watcher thread turns a CANCELLING state set through the API into an
interrupt of the drill, and the `on_cancellation` hook rolls back when a runner kills the process instead.
Each step is bound to a step of runbooks/drill-*.md by `@runbook_step`.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, Completed, Failed, State

from flows.artifacts import artifact_key, publish_markdown, publish_raw_markdown, publish_table
from flows.drill_measure import escalated_at, wait_for_diagnosis
from flows.steps import runbook_step
from k8s_runbooks.drills.families import FAMILY_RESPONSES, FamilyResponse
from k8s_runbooks.drills.model import DrillParams, FaultSpec, Phase, Scenario, Scorecard, SteadyStateReport
from k8s_runbooks.drills.report import phase_rows, scorecard_document, trend_chart, trend_of
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.guard import Guard, read_audit
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.models import Decision, WorkloadRef, utcnow
from k8s_runbooks.postmortem.model import RunRecord
from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir
from k8s_runbooks.settings import get_settings
from tasks import drills as t

POD_CRASH_FLOW = "drill-pod-crash"
LATENCY_FLOW = "drill-latency"
FAMILY_FLOW = "drill-fault-family"
FLOWS = (POD_CRASH_FLOW, LATENCY_FLOW, FAMILY_FLOW)
RUNBOOKS = {POD_CRASH_FLOW: runbooks_dir() / "drill-pod-crash.md", LATENCY_FLOW: runbooks_dir() / "drill-latency.md",
            FAMILY_FLOW: runbooks_dir() / "drill-fault-family.md"}
SCORECARD_KEY = "drill-scorecard"
ALERTS = {"pod-crash": ["PodCrashLooping"], "latency": ["HighLatency"]}
RUNBOOK_DEPLOYMENT = {"pod-crash": "pod-crash/pod-crash", "latency": "high-latency/high-latency"}
POLL = 2.0
CANCEL_POLL = 2.0
ENDED_GRACE_SECONDS = 15.0  # response ended without a fix: look for recovery this long, not the whole timeout


class DrillStop(Exception):
    """Ends the drill before injecting (refused, not steady, dry run)."""


def interrupt_thread(thread_id: int) -> None:
    """Raise KeyboardInterrupt in that thread at its next Python instruction. Not `_thread.interrupt_main()`: it
    simulates a SIGINT and does nothing when SIGINT is ignored, as it is in every process a non-interactive shell
    starts in the background (`cmd &`, nohup, many CI and service scripts): such a drill could not be cancelled."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt))
    if done != 1:
        raise RuntimeError(f"could not interrupt thread {thread_id} (PyThreadState_SetAsyncExc returned {done})")


class CancelWatcher(threading.Thread):
    """Interrupts the drill's thread once the run is CANCELLING (a locally started flow run is not
    cancelled by any runner: this makes an API cancellation roll the drill back)."""

    def __init__(self, flow_run_id: str) -> None:
        super().__init__(daemon=True, name="drill-cancel-watcher")
        self.target_thread = threading.get_ident()  # created by the thread that runs the drill
        self.flow_run_id = UUID(flow_run_id)
        self.fired = threading.Event()
        self.armed = threading.Event()
        self.armed.set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(CANCEL_POLL):
            try:
                with get_client(sync_client=True) as client:
                    state = client.read_flow_run(self.flow_run_id).state
            except Exception:  # noqa: BLE001 - an API hiccup must not stop the watch
                continue
            if state is not None and state.type.value in ("CANCELLING", "CANCELLED"):
                self.fired.set()
                if self.armed.is_set():
                    interrupt_thread(self.target_thread)
                return

    def disarm(self) -> None:
        self.armed.clear()

    def stop(self) -> None:
        self.stopped.set()


@dataclass
class DrillCtx:
    flow: str
    scenario: Scenario
    params: DrillParams
    fault: FaultSpec
    flow_run_id: str
    card: Scorecard
    record: RunRecord
    original_replicas: int | None = None
    injected_at: datetime | None = None
    alert_at: datetime | None = None
    runbook_running_at: datetime | None = None
    approval_seconds: float | None = None
    recovered_at: datetime | None = None
    response_path: str = ""
    runbook_final: bool = False
    runbook_fixed: bool = False
    diagnosed_at: datetime | None = None
    diagnosed_cause: str = ""
    escalated_at: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def family(self) -> FamilyResponse | None:
        """The expected response when the fault is a cluster fault family."""
        return FAMILY_RESPONSES.get(self.fault.kind) if self.scenario == "family" else None

    def note(self, event: str, detail: str = "", kind: str = "step", at: datetime | None = None) -> None:
        self.record.note(event, detail, kind, at=at)
        get_run_logger().info("%s%s", event, f": {detail}" if detail else "")


def rollback_file(flow_run_id: str) -> Path:
    return Path(get_settings().state_dir) / "drills" / f"{flow_run_id}.json"


# ------------------------------------------------------------------------------------ plan (dry run, CLI)
def resolve_fault(scenario: Scenario, params: DrillParams) -> FaultSpec:
    if params.fault is not None:
        return params.fault
    return FaultSpec(kind={"pod-crash": "crash", "latency": "latency"}.get(scenario, "missing-secret"))  # type: ignore[arg-type]


def alert_names(ctx: DrillCtx) -> list[str]:
    return list(ctx.family.alerts) if ctx.family else ALERTS[ctx.scenario]


def runbook_deployment(ctx: DrillCtx) -> str:
    return ctx.family.runbook if ctx.family else RUNBOOK_DEPLOYMENT[ctx.scenario]


def plan_markdown(scenario: Scenario, params: DrillParams, response_path: str = "") -> str:
    fault = resolve_fault(scenario, params)
    ss, tg = params.steady_state, params.targets
    return "\n".join([
        f"# Drill plan: {scenario} on {params.namespace}/{params.deployment}\n",
        "1. **Guardrails**: namespace labelled `k8s-runbooks.io/drills=allowed`, not protected; the guard checks the fault.",
        f"2. **Steady state** (abort without injecting if not): ready replicas >= {ss.min_ready_ratio:.0%} of desired"
        + (f"; p95 < {ss.p95_threshold_ms:g} ms" if ss.p95_threshold_ms else "")
        + ("; no firing alerts for the target" if ss.check_alerts else "") + "; no FAULT_* env left.",
        f"3. **Inject**: {fault.describe()} (through the guard, audited).",
        f"4. **Respond**: {response_path or params.response} path, runbook approval `{params.approval}`; "
        f"targets: detect {tg.detect_seconds:g} s, respond {tg.respond_seconds:g} s, approval {tg.approval_seconds:g} s, recover {tg.recover_seconds:g} s.",
        "5. **Recover**: wait for ready replicas and p95 back within tolerance.",
        "6. **Rollback (always)**: remove every FAULT_* env var, restore the replica count, verify the steady state.",
        "7. **Score**: scorecard artifact, drill post-mortem, trend of past drills, metrics to the Pushgateway.",
    ])


# ------------------------------------------------------------------------------------ steps
def _both(step_id: str) -> Callable[[Callable[[DrillCtx], None]], Callable[[DrillCtx], None]]:
    def register(fn: Callable[[DrillCtx], None]) -> Callable[[DrillCtx], None]:
        for name in FLOWS:
            runbook_step(name, step_id)(fn)
        return fn
    return register


@_both("steady-state")
def check_before(ctx: DrillCtx) -> None:
    p = ctx.params
    pods = t.pick_pods(p.namespace, p.deployment, ctx.fault.pods) if ctx.fault.kind == "pod-kill" else None
    if ctx.fault.kind != "custom":
        verdict = t.drill_guard_check(t.fault_action(p.namespace, p.deployment, ctx.fault, pods), ctx.flow_run_id)
        if verdict.decision is Decision.refused:
            ctx.card.outcome, ctx.card.outcome_detail = "refused", f"the guard refused the fault: {verdict.reason}"
            ctx.note("Drill refused by the guard", verdict.reason, "escalation")
            raise DrillStop()
    else:  # a user task still only runs where drills are allowed
        refusal = _custom_refusal(p.namespace)
        if refusal:
            ctx.card.outcome, ctx.card.outcome_detail = "refused", refusal
            raise DrillStop()
    report = t.check_steady_state(p.namespace, p.deployment, p.steady_state)
    ctx.card.steady_before = report
    ctx.note("Steady state before: " + ("steady" if report.ok else "NOT steady"), report.summary())
    if not report.ok:
        ctx.card.outcome = "aborted"
        ctx.card.outcome_detail = "target not steady; nothing injected: " + "; ".join(f"{x.name} {x.observed}" for x in report.failing())
        raise DrillStop()
    if p.dry_run:
        ctx.card.outcome, ctx.card.outcome_detail = "dry-run", "guardrails and steady state checked; nothing injected"
        publish_markdown(artifact_key(ctx.flow, "plan"), plan_markdown(ctx.scenario, p, ctx.response_path), "Drill plan (dry run)")
        raise DrillStop()


def _custom_refusal(namespace: str) -> str:
    from k8s_runbooks.drills.kube_faults import namespace_allows_drills

    guard = Guard()
    if namespace in guard.settings.protected_namespaces:
        return f"namespace {namespace} is protected"
    ok, why = namespace_allows_drills(guard.kube, namespace)
    return "" if ok else why


def _load(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@_both("inject")
def inject(ctx: DrillCtx) -> None:
    p = ctx.params
    ctx.original_replicas = t.desired_replicas(p.namespace, p.deployment)
    path = rollback_file(ctx.flow_run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"namespace": p.namespace, "deployment": p.deployment, "replicas": ctx.original_replicas,
                                "kube_context": p.kube_context, "fault": ctx.fault.model_dump()}), encoding="utf-8")
    ctx.injected_at = utcnow()
    if ctx.fault.kind == "custom":
        _load(ctx.fault.task)(p.namespace, p.deployment, ctx.fault.value)
        detail = f"custom task {ctx.fault.task}"
    else:
        pods = t.pick_pods(p.namespace, p.deployment, ctx.fault.pods) if ctx.fault.kind == "pod-kill" else None
        result = t.inject_fault(t.fault_action(p.namespace, p.deployment, ctx.fault, pods), ctx.flow_run_id)
        ctx.record.actions.append(result)
        if not result.executed:
            ctx.injected_at = None
            ctx.card.outcome, ctx.card.outcome_detail = "refused", f"the guard refused the fault: {result.detail}"
            raise DrillStop()
        detail = result.detail
    ctx.card.injected_at = ctx.injected_at
    ctx.note(f"Fault injected: {ctx.fault.describe()}", detail, "detected", at=ctx.injected_at)


def _alert_path_available(ctx: DrillCtx) -> bool:
    import httpx

    if t.deployment_id(runbook_deployment(ctx)) is None:
        return False
    try:
        return httpx.get(get_settings().receiver_url.rstrip("/") + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for_alert(ctx: DrillCtx) -> None:
    p = ctx.params
    assert ctx.injected_at is not None
    deadline = time.monotonic() + p.detect_timeout_seconds
    from k8s_runbooks.drills.alertmanager import starts_at

    while time.monotonic() < deadline:
        try:
            alerts = t.target_alerts(p.namespace, p.deployment, p.steady_state.service)
        except RunbookError as exc:
            ctx.note("Alertmanager unavailable", str(exc), "note")
            alerts = []
        mine = [a for a in alerts if a.get("labels", {}).get("alertname") in alert_names(ctx)]
        if mine:
            # startsAt is when the rule began firing; never earlier than the fault (clock skew, resolution)
            first = min((starts_at(a) or utcnow()) for a in mine)
            ctx.alert_at = max(first, ctx.injected_at)
            names = ", ".join(sorted({a["labels"].get("alertname", "?") for a in mine}))
            ctx.note(f"Alert firing in Alertmanager: {names}", f"{len(mine)} alert(s)", "detected", at=ctx.alert_at)
            return
        time.sleep(POLL)
    ctx.note("No alert fired", f"nothing for {alert_names(ctx)} within {p.detect_timeout_seconds} s", "escalation")


def _paused_seconds(states: list[Any]) -> float | None:
    """Time spent PAUSED (waiting for approval) from a run's state history."""
    states = sorted((s for s in states if s.timestamp), key=lambda s: s.timestamp)
    total, paused_at, seen = 0.0, None, False
    for s in states:
        if s.type.value == "PAUSED" and paused_at is None:
            paused_at, seen = s.timestamp, True
        elif s.type.value != "PAUSED" and paused_at is not None:
            total += (s.timestamp - paused_at).total_seconds()
            paused_at = None
    if paused_at is not None:
        total += (utcnow() - paused_at).total_seconds()
    return total if seen else None


def _first_running(states: list[Any]) -> datetime | None:
    running = [s.timestamp for s in states if s.type.value == "RUNNING" and s.timestamp]
    return min(running) if running else None


def _direct(ctx: DrillCtx) -> None:
    from flows.common import read_record

    p = ctx.params
    base = {"namespace": p.namespace, "deployment": p.deployment, "approval": p.approval,
            "approval_timeout_seconds": p.approval_timeout_seconds, "drill": True, "kube_context": p.kube_context,
            "notes": f"drill {ctx.flow_run_id}" + (f"; {p.notes}" if p.notes else "")}
    if ctx.family is not None and ctx.family.runbook.startswith("incident-response/"):
        from flows.incident_response import incident_response
        from flows.params import IncidentParams

        incident = {k: v for k, v in base.items() if k != "deployment"}
        state = incident_response(IncidentParams(**incident, service=p.deployment, alertname=ctx.family.alerts[0],
                                                 runbook_overrides=p.runbook_overrides), return_state=True)
    elif ctx.scenario in ("pod-crash", "family"):
        from flows.params import PodCrashParams
        from flows.pod_crash import pod_crash

        state = pod_crash(PodCrashParams(**{**base, **p.runbook_overrides}), return_state=True)
    else:
        from flows.high_latency import high_latency
        from flows.params import HighLatencyParams

        extra = {"service": p.steady_state.service or p.deployment, "service_label": p.steady_state.service_label}
        if p.steady_state.p95_threshold_ms:
            extra["p95_threshold_ms"] = p.steady_state.p95_threshold_ms
        state = high_latency(HighLatencyParams(**{**base, **extra, **p.runbook_overrides}), return_state=True)
    run_id = str(state.state_details.flow_run_id)
    ctx.card.runbook_run_id, ctx.card.runbook_state = run_id, f"{state.name}: {state.message or ''}".strip(": ")
    ctx.runbook_final = True
    states = t.run_states(run_id)
    ctx.runbook_running_at = _first_running(states)
    ctx.approval_seconds = _paused_seconds(states)
    _collect_responders(ctx, read_record(run_id))


def _collect_responders(ctx: DrillCtx, rec: RunRecord | None) -> None:
    if rec is None:
        ctx.card.responders.append("no run record from the runbook")
        return
    for e in rec.timeline:
        if e.kind in ("approval", "escalation"):
            ctx.card.responders.append(f"{e.at:%H:%M:%S} {e.event}" + (f" — {e.detail}" if e.detail else ""))
    for a in rec.actions:
        ctx.card.responders.append(f"{a.started_at:%H:%M:%S} {a.action.describe()}: {a.decision.value}"
                                   + (", executed" if a.executed else ", not executed"))
    ctx.runbook_fixed = any(a.executed for a in rec.actions)
    ctx.card.responders.append(f"runbook outcome: {rec.outcome}" + (f" — {rec.outcome_detail}" if rec.outcome_detail else ""))


def _alert_path(ctx: DrillCtx) -> None:
    p = ctx.params
    assert ctx.injected_at is not None
    dep_id = t.deployment_id(runbook_deployment(ctx))
    if dep_id is None:
        raise RunbookError(f"runbook deployment {runbook_deployment(ctx)} is not registered")
    since = ctx.injected_at - timedelta(seconds=5)
    deadline = time.monotonic() + p.response_timeout_seconds
    while time.monotonic() < deadline:
        run = t.find_runbook_run(dep_id, p.namespace, p.deployment, since)
        if run and run["state"] not in (None, "SCHEDULED", "PENDING"):
            ctx.card.runbook_run_id = run["id"]
            ctx.runbook_running_at = _first_running(t.run_states(run["id"])) or utcnow()
            ctx.note(f"Runbook run {run['id']} running (created by the alert receiver)", run.get("state_name") or "", "step",
                     at=ctx.runbook_running_at)
            return
        time.sleep(POLL)
    ctx.note("No runbook run started", f"nothing for {runbook_deployment(ctx)} within {p.response_timeout_seconds} s", "escalation")


def _finish_alert_path_run(ctx: DrillCtx, wait_seconds: float) -> None:
    from flows.common import read_record

    run_id = ctx.card.runbook_run_id
    if not run_id:
        return
    deadline = time.monotonic() + wait_seconds
    while True:
        run = t.read_run(run_id)
        final = bool(run.state and run.state.is_final())
        if final or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    ctx.runbook_final = final
    ctx.card.runbook_state = (f"{run.state.name}: {run.state.message or ''}".strip(": ") if run.state else "unknown") + ("" if final else " (still running)")
    ctx.approval_seconds = _paused_seconds(t.run_states(run_id))
    _collect_responders(ctx, read_record(run_id))


@_both("respond")
def respond(ctx: DrillCtx) -> None:
    if ctx.response_path == "none":
        ctx.note("No response path: measuring recovery only")
        return
    _wait_for_alert(ctx)
    if ctx.response_path == "alert":
        _alert_path(ctx)
    else:
        _direct(ctx)
    if ctx.family is not None and ctx.card.runbook_run_id:
        _measure_diagnosis(ctx)


def _measure_diagnosis(ctx: DrillCtx) -> None:
    """Alert → the runbook's first ranked causes: when, and whether the right cause came first."""
    assert ctx.family is not None and ctx.card.runbook_run_id
    found = wait_for_diagnosis(ctx.card.runbook_run_id, ctx.params.response_timeout_seconds)
    if found is None:
        ctx.note("No diagnosis published", f"run {ctx.card.runbook_run_id} published no ranked causes", "escalation")
        return
    ctx.diagnosed_at, ctx.diagnosed_cause = found.at, found.top_cause
    right = found.top_cause == ctx.family.cause
    ctx.note(f"Diagnosed: {found.top_cause or 'no cause'}" + ("" if right else f" (expected {ctx.family.cause})"),
             "ranked: " + ", ".join(found.ranked[:3]), "detected" if right else "escalation", at=found.at)


def _wait_for_escalation(ctx: DrillCtx) -> None:
    """A family whose answer is a person's change: the runbook must end escalated (the exact change stated)."""
    from flows.common import read_record

    run_id = ctx.card.runbook_run_id
    if not run_id:
        return
    if not ctx.runbook_final:
        _finish_alert_path_run(ctx, float(ctx.params.response_timeout_seconds))
    run = t.read_run(run_id)
    ctx.escalated_at = escalated_at(read_record(run_id), run.end_time)
    if ctx.escalated_at is not None:
        ctx.note("Runbook escalated", ctx.card.runbook_state or "", "escalation", at=ctx.escalated_at)
    else:
        ctx.note("Runbook did not escalate", ctx.card.runbook_state or "", "escalation")


def _recovered(ctx: DrillCtx, report: SteadyStateReport) -> bool:
    """A family is fixed when the steady state holds with replicas to serve (scaled to 0 reads as 'all ready'). The
    runbook cannot know how many replicas a workload scaled to zero had (it scales back to 1): the rollback
    restores the count."""
    p = ctx.params
    return report.ok and t.desired_replicas(p.namespace, p.deployment) >= 1


@_both("recover")
def recover(ctx: DrillCtx) -> None:
    p = ctx.params
    assert ctx.injected_at is not None
    started = time.monotonic()
    limit = float(p.recover_timeout_seconds)
    if ctx.family is not None and ctx.family.escalates:
        _wait_for_escalation(ctx)
        return
    if ctx.runbook_final and not ctx.runbook_fixed:
        limit = ENDED_GRACE_SECONDS  # nobody fixed anything: the fault stays until the rollback removes it
    report: SteadyStateReport | None = None
    while time.monotonic() - started < limit:
        report = t.check_steady_state(p.namespace, p.deployment, p.steady_state, include_alerts=False, include_fault=False)
        # A pod-kill is healed by the controller; an env fault only when the responders removed it.
        fault_gone = ctx.fault.kind in ("pod-kill", "custom") or not _fault_left(ctx)
        if ctx.family is not None:
            fault_gone = _recovered(ctx, report)
        if report.ok and fault_gone and (time.monotonic() - started > 3 or ctx.fault.kind != "pod-kill"):
            ctx.recovered_at = report.at
            ctx.note("Steady state again (service recovered)", report.summary(), "recovered", at=report.at)
            break
        time.sleep(POLL)
    if ctx.recovered_at is None:
        ctx.note("Not recovered before the rollback", report.summary() if report else "", "escalation")
    if ctx.response_path == "alert":
        _finish_alert_path_run(ctx, p.runbook_wait_after_recovery_seconds if ctx.recovered_at else 0)


def _fault_left(ctx: DrillCtx) -> bool:
    from k8s_runbooks.drills.probes import probe_no_fault

    return not probe_no_fault(ctx.params.namespace, ctx.params.deployment, get_settings()).ok


@_both("rollback")
def rollback(ctx: DrillCtx) -> None:
    """Always: remove the fault, restore replicas, verify. Each part is tried even if another fails."""
    p, card = ctx.params, ctx.card
    if ctx.injected_at is None:
        card.rollback.append("nothing was injected: nothing to roll back")
        return
    if ctx.fault.kind == "custom" and ctx.fault.rollback_task:
        try:
            _load(ctx.fault.rollback_task)(p.namespace, p.deployment)
            card.rollback.append(f"custom rollback {ctx.fault.rollback_task} ran")
        except Exception as exc:  # noqa: BLE001 - continue with the generic rollback
            card.rollback.append(f"custom rollback failed: {exc}")
    for what, fn in (("remove fault", lambda: t.remove_fault(p.namespace, p.deployment, ctx.flow_run_id)),
                     ("restore replicas", lambda: t.restore_replicas(p.namespace, p.deployment, ctx.original_replicas or 1, ctx.flow_run_id))):
        try:
            result = fn()
            card.rollback.append(f"{what}: {result.decision.value}: {result.detail}" if result else f"{what}: already as before")
            if result is not None:
                ctx.record.actions.append(result)
        except Exception as exc:  # noqa: BLE001 - report, keep going, verification says the rest
            card.rollback.append(f"{what} FAILED: {exc}")
    # The rollback is verified when what it controls holds (replicas, no fault, latency). Alerts resolve on
    # their rule's own window (minutes on a real cluster): reported in the final report, never waited for.
    deadline = time.monotonic() + p.post_verify_timeout_seconds
    report = t.check_steady_state(p.namespace, p.deployment, p.steady_state)
    while not _controlled_ok(report) and time.monotonic() < deadline:
        time.sleep(POLL)
        report = t.check_steady_state(p.namespace, p.deployment, p.steady_state)
    card.steady_after = report
    card.rollback_ok = _controlled_ok(report)
    ctx.note("Steady state after rollback: " + ("steady" if report.ok else "NOT steady"), report.summary(),
             "recovered" if card.rollback_ok else "escalation")
    rollback_file(ctx.flow_run_id).unlink(missing_ok=True)


def _controlled_ok(report: SteadyStateReport) -> bool:
    return all(x.ok for x in report.probes if x.name != "firing alerts")


def _phases(ctx: DrillCtx) -> list[Phase]:
    tg, t0 = ctx.params.targets, ctx.injected_at
    out: list[Phase] = []

    def phase(name: str, seconds: float | None, target: float, detail: str) -> None:
        out.append(Phase(name=name, seconds=None if seconds is None else max(0.0, seconds), target_seconds=target,  # type: ignore[arg-type]
                         met=None if seconds is None else seconds <= target, detail=detail))

    if t0 is None:
        return out
    if ctx.response_path != "none":
        phase("detect", (ctx.alert_at - t0).total_seconds() if ctx.alert_at else None, tg.detect_seconds,
              "fault → alert firing in Alertmanager" if ctx.alert_at else "no alert fired")
        start = ctx.alert_at or t0
        phase("respond", (ctx.runbook_running_at - start).total_seconds() if ctx.runbook_running_at else None, tg.respond_seconds,
              f"{'alert' if ctx.alert_at else 'fault'} → runbook running ({ctx.response_path} path)" if ctx.runbook_running_at else "runbook never ran")
        if ctx.approval_seconds is not None:
            phase("approval", ctx.approval_seconds, tg.approval_seconds, f"runbook paused for approval ({ctx.params.approval})")
    fam = ctx.family
    if fam is not None:
        start = ctx.alert_at or t0
        seconds = (ctx.diagnosed_at - start).total_seconds() if ctx.diagnosed_at else None
        phase("diagnose", seconds, tg.diagnose_seconds,
              f"alert → ranked causes: {ctx.diagnosed_cause or 'none'} first (expected {fam.cause})" if ctx.diagnosed_at
              else "no ranked causes published")
        if ctx.diagnosed_at and ctx.diagnosed_cause != fam.cause:
            out[-1].met = False
        if fam.escalates:
            phase("escalate", (ctx.escalated_at - t0).total_seconds() if ctx.escalated_at else None, tg.escalate_seconds,
                  "fault → escalation with the exact change" if ctx.escalated_at else "the runbook did not escalate")
            for p in out:  # an unmeasured phase of a drill that ran is a miss, not a pass
                if p.seconds is None:
                    p.met = False
            return out
    phase("recover", (ctx.recovered_at - t0).total_seconds() if ctx.recovered_at else None, tg.recover_seconds,
          "fault → steady state again" if ctx.recovered_at else "not recovered before the rollback")
    for p in out:  # an unmeasured phase of a drill that ran is a miss, not a pass
        if p.seconds is None:
            p.met = False
    return out


@_both("score")
def score(ctx: DrillCtx) -> None:
    card = ctx.card
    card.phases = _phases(ctx)
    card.finished_at = utcnow()
    if card.outcome not in ("refused", "aborted", "cancelled", "dry-run"):
        missed = [p.name for p in card.phases if not p.met]
        answered = ctx.escalated_at is not None if ctx.family and ctx.family.escalates else ctx.recovered_at is not None
        ok = not missed and answered and bool(card.rollback_ok)
        card.outcome = "passed" if ok else "failed"
        if not ok and not card.outcome_detail:
            card.outcome_detail = (f"missed: {', '.join(missed)}" if missed else "") + ("" if card.rollback_ok else "; rollback not verified")
    _publish(ctx)


def _publish(ctx: DrillCtx) -> None:
    card, log = ctx.card, get_run_logger()
    publish_raw_markdown(SCORECARD_KEY, scorecard_document(card), f"Drill scorecard: {card.outcome}")
    if card.phases:
        publish_table(artifact_key(ctx.flow, "phases"), phase_rows(card), "Drill phases against their targets")
    try:
        url = t.push_drill_metrics(card)
        ctx.note("Drill metrics pushed", url, "communication")
    except RunbookError as exc:
        log.warning("drill metrics not pushed: %s", exc)
        ctx.note("Drill metrics not pushed", str(exc), "note")
    try:
        publish_trend(card.namespace, card.deployment, ctx.flow_run_id, extra=card)
    except Exception as exc:  # noqa: BLE001 - the trend is a bonus; never mask the drill's outcome
        log.warning("drill trend unavailable: %s", exc)


# ------------------------------------------------------------------------------------ trend
def past_scorecards(namespace: str, deployment: str, limit: int = 50) -> list[Scorecard]:
    """Scorecards of past drill runs of this target, read back from Prefect (flow runs → artifacts)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOWS))),
                                     sort=FlowRunSort.START_TIME_DESC, limit=200)  # the server's maximum page
        ids = [r.id for r in runs if ((r.parameters or {}).get("params") or {}).get("namespace") == namespace
               and ((r.parameters or {}).get("params") or {}).get("deployment") == deployment][:limit]
        if not ids:
            return []
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids),
                                                                    key=ArtifactFilterKey(any_=[SCORECARD_KEY])))
    newest: dict[Any, Any] = {}
    for a in arts:
        if a.flow_run_id not in newest or str(a.created) > str(newest[a.flow_run_id].created):
            newest[a.flow_run_id] = a
    cards = [Scorecard.from_markdown(a.data) for a in newest.values() if isinstance(a.data, str)]
    return [c for c in cards if c is not None]


def publish_trend(namespace: str, deployment: str, flow_run_id: str, extra: Scorecard | None = None) -> Path | None:
    cards = {c.drill_run_id: c for c in past_scorecards(namespace, deployment)}
    if extra is not None:
        cards[extra.drill_run_id] = extra
    trend = trend_of(namespace, deployment, [c for c in cards.values() if c.outcome != "dry-run"])
    if not trend.points:
        return None
    chart = trend_chart(trend, Path(get_settings().reports_dir) / flow_run_id / "drill-trend.png")
    publish_table(artifact_key("drill", "trend", "table"), trend.rows(), f"Drills of {namespace}/{deployment}: MTTD/MTTR")
    publish_markdown(artifact_key("drill", "trend"), trend.markdown(chart), f"Drill trend of {namespace}/{deployment}")
    return chart


# ------------------------------------------------------------------------------------ driver
def _rollback_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_cancellation` hook (runner/worker cancellation kills the process before our finally runs)."""
    path = rollback_file(str(flow_run.id))
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # nothing was injected (the file is written just before injecting, removed after rollback)
    from k8s_runbooks.models import Action, ActionKind
    from tasks.drills import removal_action

    with kube_context(plan.get("kube_context")):  # roll back on the cluster the fault went to
        guard = Guard()
        guard.execute(removal_action(plan["namespace"], plan["deployment"]), "auto", "drill-cancel-hook", str(flow_run.id))
        guard.execute(Action(kind=ActionKind.scale, target=WorkloadRef(namespace=plan["namespace"], name=plan["deployment"]),
                             replicas=int(plan["replicas"]), allow_all_replicas=True, reason="drill cancelled: restore replicas"),
                      "auto", "drill-cancel-hook", str(flow_run.id))
    path.unlink(missing_ok=True)


def _resolve_path(ctx: DrillCtx) -> str:
    p = ctx.params
    if p.response == "none" or ctx.fault.kind == "pod-kill" and p.response == "auto":
        return "none"
    if p.response == "auto":
        # Another cluster's alerts reach the runbook only through a receiver route naming its context: the drill
        # cannot know that route exists, so it answers with the runbook directly on that cluster.
        return "alert" if not p.kube_context and _alert_path_available(ctx) else "direct"
    return p.response


def run_drill(flow_name: str, scenario: Scenario, params: DrillParams) -> State:
    fault = resolve_fault(scenario, params)
    book = load_runbook(RUNBOOKS[flow_name])
    flow_run_id = str(runtime_flow_run.id)
    card = Scorecard(drill_run_id=flow_run_id, flow=flow_name, scenario=scenario, namespace=params.namespace,
                     deployment=params.deployment, fault=fault.describe(), approval=params.approval)
    record = RunRecord(flow=flow_name, runbook_title=book.title, namespace=params.namespace, deployment=params.deployment,
                       approval_mode=params.approval, drill=True, impact=f"drill on {params.namespace}/{params.deployment}: {fault.describe()}")
    ctx = DrillCtx(flow=flow_name, scenario=scenario, params=params, fault=fault, flow_run_id=flow_run_id, card=card, record=record)
    publish_raw_markdown(artifact_key(flow_name, "runbook"), book.markdown, f"The drill runbook: {book.path}")
    watcher = CancelWatcher(flow_run_id)
    watcher.start()
    error: BaseException | None = None
    try:
        try:
            ctx.response_path = _resolve_path(ctx)
            card.response_path = ctx.response_path
            ctx.note("Drill started", f"{fault.describe()}; response {ctx.response_path}; approval {params.approval}"
                     + (f"; cluster context {params.kube_context}" if params.kube_context else ""))
            for step in (check_before, inject, respond, recover):
                step(ctx)
        finally:
            watcher.disarm()
    except DrillStop:
        pass
    except KeyboardInterrupt as exc:
        if not watcher.fired.is_set():
            error = exc
        card.outcome, card.outcome_detail = "cancelled", "cancelled through Prefect; rolled back"
        ctx.note("Drill cancelled", "rolling back", "escalation")
    except Exception as exc:  # noqa: BLE001 - rolled back and scored, then re-raised
        error = exc
        card.outcome, card.outcome_detail = "failed", f"drill error: {exc}"
        ctx.note("Drill step failed", str(exc), "escalation")
    finally:
        watcher.stop()
        rollback(ctx)
        record.outcome = {"passed": "resolved", "dry-run": "dry-run", "cancelled": "escalated"}.get(card.outcome, "failed")  # type: ignore[assignment]
        score(ctx)
        record.outcome = "resolved" if card.outcome == "passed" else record.outcome
        record.outcome_detail = f"drill {card.outcome}" + (f": {card.outcome_detail}" if card.outcome_detail else "")
        record.audit = read_audit(flow_run_id)
        publish_raw_markdown(artifact_key(flow_name, "record"), record.to_markdown(), "drill run record (post-mortem source)")
        _postmortem(flow_run_id)
    if error is not None:
        raise error
    message = f"drill {card.outcome}" + (f": {card.outcome_detail}" if card.outcome_detail else "")
    if card.outcome == "cancelled":
        _force_state(flow_run_id, Cancelled(message=message))
        return Cancelled(message=message)
    if card.outcome in ("passed", "dry-run", "aborted"):
        return Completed(message=message)
    return Failed(message=message)


def _force_state(flow_run_id: str, state: State) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), state, force=True)


def _postmortem(flow_run_id: str) -> None:
    from flows.postmortem import postmortem_flow

    try:
        postmortem_flow(run_id=flow_run_id)
    except Exception as exc:  # noqa: BLE001 - the CLI can rebuild it
        get_run_logger().error("drill report could not be written: %s", exc)


@flow(name=POD_CRASH_FLOW, on_cancellation=[_rollback_on_cancel], log_prints=True)
def drill_pod_crash(params: DrillParams) -> State:
    """Pod-crash drill: crash (or kill, OOM) the Deployment's pods and score the response."""
    with kube_context(params.kube_context):  # every Kubernetes call of the drill goes to that cluster
        return run_drill(POD_CRASH_FLOW, "pod-crash", params)


@flow(name=LATENCY_FLOW, on_cancellation=[_rollback_on_cancel], log_prints=True)
def drill_latency(params: DrillParams) -> State:
    """Latency drill: slow the Deployment down (latency or CPU burn) and score the response."""
    with kube_context(params.kube_context):
        return run_drill(LATENCY_FLOW, "latency", params)


@flow(name=FAMILY_FLOW, on_cancellation=[_rollback_on_cancel], log_prints=True)
def drill_fault_family(params: DrillParams) -> State:
    """Fault-family drill: one cluster fault (params.fault.kind), answered through the alert path; scored on time to
    detect, to diagnose (the right cause first) and to recover, or to escalate for the families a person fixes."""
    with kube_context(params.kube_context):
        return run_drill(FAMILY_FLOW, "family", params)


def scorecard_of(flow_run_id: str) -> Scorecard | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
                                                                    key=ArtifactFilterKey(any_=[SCORECARD_KEY])))
    arts = sorted((a for a in arts if isinstance(a.data, str)), key=lambda a: str(a.created))
    return Scorecard.from_markdown(arts[-1].data) if arts else None
