"""The high-latency runbook as a Prefect flow: check metrics → inspect pods → analyze logs → resolve
(approval) → monitor → communicate.

Each step is bound to a step of runbooks/high-latency.md by `@runbook_step`; steps pass typed results.
`check-metrics` measures the service (p95/p99, errors, per pod, CPU, memory, and p95 when the newest
revision began); `inspect-pods` gives that measurement with the namespace's evidence to the diagnosis
engine, which ranks the causes: a slow revision (it was fast when it began) → roll back; CPU throttling with
the service slow → raise the CPU limit (shown as a diff); a few outlier pods → restart those pods; a cause
elsewhere (a slow dependency, a node's network) → escalate with the exact change. After an executed action
`monitor` watches p95 until it stays below the threshold for a stable window, or escalates on timeout.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import State

from flows.artifacts import artifact_key, publish_table
from flows.common import Approval, Recovery, Run, StopRunbook, communicate_outcome, drive, execute_and_wait, run_and_build, seek_approval, start_run, step
from flows.concurrency import remediation_slot
from flows.diagnosis import Identified, actions_for, escalate, identify_causes, recheck
from flows.params import HighLatencyParams
from flows.snapshots import Scope, publish_charts
from flows.steps import runbook_step
from k8s_runbooks.charts import first_breach, lines_from_range
from k8s_runbooks.diagnosis.evidence import LatencyObservation
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.models import ActionKind, QueryResult, Severity, utcnow
from k8s_runbooks.postmortem.render import md_code_block
from k8s_runbooks.prom import promql
from k8s_runbooks.runbook_docs import runbooks_dir
from tasks.metrics import prom_instant, prom_range
from tasks.pods import workload_status
from tasks.sentry import sentry_on_failure

FLOW = "high-latency"
RUNBOOK_PATH = runbooks_dir() / "high-latency.md"
SYMPTOM = "Service latency increased significantly HighLatency"
MONITOR_POLL_SECONDS = 5.0
MEMORY_PRESSURE = 0.9
ERROR_RATE_NOTABLE = 0.05
LOG_PATTERNS: dict[str, re.Pattern[str]] = {
    "error": re.compile(r"\bERROR\b|\berror\b"),
    "warning": re.compile(r"\bWARN(ING)?\b"),
    "exception": re.compile(r"exception|traceback|panic", re.I),
    "timeout": re.compile(r"timed? ?out|deadline exceeded", re.I),
    "5xx": re.compile(r"\b5\d\d\b"),
}


@dataclass
class Measured:
    """What check-metrics measured (None p95: nothing to resolve, the service is below the threshold)."""

    observation: LatencyObservation
    throttled: dict[str, float] = field(default_factory=dict)
    detected_at: datetime | None = None

    @property
    def slow(self) -> bool:
        o = self.observation
        return o.current_ms is not None and o.current_ms > o.threshold_ms


def _value(result: QueryResult) -> float | None:
    vals = [v for _, v in result.samples if math.isfinite(v)]
    return vals[0] if vals else None


def _by_pod(result: QueryResult) -> dict[str, float]:
    return {labels["pod"]: v for labels, v in result.samples if "pod" in labels and math.isfinite(v)}


# ------------------------------------------------------------------------------------ 1. check metrics
def _instant(run: Run[HighLatencyParams], title: str, query: str, at: datetime | None = None) -> QueryResult | None:
    try:
        result = prom_instant(query, at)
    except RunbookError as exc:
        run.note(f"{title} unavailable", str(exc), "note")
        return None
    run.evidence("check-metrics", title, "query", query + "\n" + ("\n".join(
        f"{labels.get('pod', '') or 'value'} {v:.4g}" for labels, v in result.samples) or "no data"))
    return result


def _detection_time(run: Run[HighLatencyParams], query: str) -> datetime | None:
    """When p95 started to exceed the threshold (start of the current breach in the incident window)."""
    p = run.params
    end = utcnow()
    start = end - timedelta(minutes=min(p.incident_window_minutes, p.chart_lookback_minutes))
    try:
        series = prom_range(query, start, end, f"{max(1, int((end - start).total_seconds() // 120))}s")
    except RunbookError:
        return None
    at = first_breach(lines_from_range(series, lambda _l: "p95", 1000.0), p.p95_threshold_ms)
    return datetime.fromtimestamp(at, tz=end.tzinfo) if at is not None else None


def _before_newest_revision(run: Run[HighLatencyParams], query: str) -> tuple[int | None, float | None]:
    """(newest revision, p95 in ms when its ReplicaSet was created) when that was inside the incident window."""
    p = run.params
    try:
        status = workload_status(p.namespace, p.deployment)
    except RunbookError as exc:
        run.note("Workload status unavailable", str(exc), "note")
        return None, None
    cur = status.current_replicaset
    if cur is None or cur.created_at is None or cur.created_at < utcnow() - timedelta(minutes=p.incident_window_minutes):
        return (cur.revision if cur else None), None
    before = _instant(run, f"p95 when revision {cur.revision} began (s)", query, at=cur.created_at)
    value = _value(before) if before else None
    if value is None:
        run.note(f"Revision {cur.revision} is recent, but there is no p95 from before it",
                 f"no latency data at {cur.created_at:%H:%M:%S}: the previous revision is not known to have been faster", "note")
    return cur.revision, value * 1000 if value is not None else None


@runbook_step(FLOW, "check-metrics")
def check_metrics(run: Run[HighLatencyParams]) -> Measured:
    """p95/p99, 5xx, per-pod latency, CPU, throttling and memory of the service from Prometheus."""
    p = run.params
    ns, svc, w, lbl = p.namespace, p.service, p.rate_window, p.service_label
    p95_q = promql.latency_quantile(ns, svc, 0.95, w, service_label=lbl)
    p95 = _instant(run, "p95 latency (s)", p95_q)
    p99 = _instant(run, "p99 latency (s)", promql.latency_quantile(ns, svc, 0.99, w, service_label=lbl))
    errors = _instant(run, "5xx error ratio", promql.error_ratio(ns, svc, w, service_label=lbl))
    per_pod = _instant(run, "p95 latency per pod (s)", promql.latency_quantile_by_pod(ns, svc, 0.95, w, service_label=lbl))
    cpu = _instant(run, "CPU cores used per pod", promql.cpu_usage(ns, p.deployment, w))
    throttling = _instant(run, "CPU throttling ratio per pod", promql.cpu_throttling_ratio(ns, p.deployment, w))
    memory = _instant(run, "Memory working set / limit per pod", promql.memory_working_set_ratio(ns, p.deployment))

    p95_s = _value(p95) if p95 else None
    p99_s = _value(p99) if p99 else None
    err = _value(errors) if errors else None
    pod_ms = {k: v * 1000 for k, v in _by_pod(per_pod).items()} if per_pod else {}
    cpu_by = _by_pod(cpu) if cpu else {}
    thr_by = _by_pod(throttling) if throttling else {}
    mem_by = _by_pod(memory) if memory else {}
    pods = sorted(set(pod_ms) | set(cpu_by) | set(thr_by))
    slow = {k: v for k, v in pod_ms.items() if v > p.p95_threshold_ms}
    throttled = {k: v for k, v in thr_by.items() if v > p.throttling_threshold}
    publish_table(artifact_key(FLOW, "check-metrics", "pods"), [
        {"pod": pod, "p95 ms": round(pod_ms[pod], 1) if pod in pod_ms else None,
         "cpu cores": round(cpu_by[pod], 3) if pod in cpu_by else None,
         "throttled %": round(100 * thr_by[pod], 1) if pod in thr_by else None,
         "memory % of limit": round(100 * mem_by[pod], 1) if pod in mem_by else None,
         "slow": pod in slow}
        for pod in pods
    ], f"Per-pod metrics of {p.namespace}/{p.service} over {w}")

    observation = LatencyObservation(service=svc, workload=p.deployment, threshold_ms=p.p95_threshold_ms,
                                     by_pod_ms=pod_ms, outlier_factor=p.outlier_factor)
    if p95_s is None:
        run.finding("check-metrics", f"No latency data for {ns}/{svc}", Severity.critical,
                    detail=f"query returned no data: {p95_q}", kind="no_data")
        raise StopRunbook("escalated", f"no latency data for {ns}/{svc} (label {lbl}); cannot judge; escalated", failed=True)
    p95_ms = p95_s * 1000
    observation.current_ms = p95_ms
    p99_text = f"{p99_s * 1000:.0f} ms" if p99_s is not None else "no data"
    err_text = f"{err:.1%}" if err is not None else "no data"
    run.record.impact = (f"p95 {p95_ms:.0f} ms (threshold {p.p95_threshold_ms:g} ms), p99 {p99_text}, 5xx {err_text} on "
                         f"{ns}/{svc}; {len(d.slow)} of {len(pod_ms)} pods above the threshold")
    if p95_ms <= p.p95_threshold_ms:
        run.note(f"p95 {p95_ms:.0f} ms is below the threshold {p.p95_threshold_ms:g} ms", "nothing to resolve", "note")
        run.record.outcome, run.record.outcome_detail = "resolved", f"p95 {p95_ms:.0f} ms is below {p.p95_threshold_ms:g} ms; nothing to do"
        return Measured(observation)

    run.finding("check-metrics", f"p95 latency of {ns}/{svc} is {p95_ms:.0f} ms (> {p.p95_threshold_ms:g} ms)", Severity.critical,
                detail=f"p99 {p99_text}, 5xx {err_text}", kind="high_latency", p95_ms=round(p95_ms, 1),
                p99_ms=round(p99_s * 1000, 1) if p99_s is not None else None, threshold_ms=p.p95_threshold_ms, service=svc)
    if slow:
        run.finding("check-metrics", f"Pods above the threshold: {', '.join(f'{k} ({v:.0f} ms)' for k, v in sorted(slow.items()))}",
                    kind="slow_pods_measured", pods=sorted(slow))
    for pod, ratio in sorted(throttled.items()):
        run.finding("check-metrics", f"CPU throttling: {pod} throttled in {ratio:.0%} of CFS periods", Severity.critical,
                    detail=f"using {cpu_by.get(pod, 0):.2f} cores", kind="cpu_throttling", pod=pod, ratio=round(ratio, 3))
    for pod, ratio in sorted(mem_by.items()):
        if ratio > MEMORY_PRESSURE:
            run.finding("check-metrics", f"Memory pressure: {pod} at {ratio:.0%} of its memory limit", kind="memory_pressure", pod=pod, ratio=round(ratio, 3))
    if err is not None and err > ERROR_RATE_NOTABLE:
        run.finding("check-metrics", f"5xx error ratio of {ns}/{svc} is {err:.1%}", kind="error_rate", ratio=round(err, 4))
    detected_at = _detection_time(run, p95_q) or utcnow()
    run.record.note(f"High latency detected: p95 {p95_ms:.0f} ms on {ns}/{svc}", f"threshold {p.p95_threshold_ms:g} ms",
                    "detected", at=detected_at)
    observation.newest_revision, observation.before_newest_revision_ms = _before_newest_revision(run, p95_q)
    return Measured(observation, throttled, detected_at)


# ------------------------------------------------------------------------------------ 2. inspect pods
@runbook_step(FLOW, "inspect-pods")
def inspect_pods(run: Run[HighLatencyParams], measured: Measured) -> Identified | None:
    """The namespace's evidence with the latency measurement, ranked by the diagnosis engine."""
    if not measured.slow:
        return None
    p = run.params
    found = identify_causes(run, "inspect-pods", focus=p.deployment, symptom=SYMPTOM, latency=[measured.observation])
    pods = [x for x in found.evidence.pods if x.workload == p.deployment]
    publish_table(artifact_key(FLOW, "inspect-pods", "pods"), [
        {"pod": x.name, "status": x.status, "node": x.node, "restarts": sum(c.restart_count for c in x.containers),
         "ready": all(c.ready for c in x.containers if not c.init), "owner": str(x.owner) if x.owner else ""}
        for x in pods
    ], f"Pods of {run.target}")
    return found


# ------------------------------------------------------------------------------------ 3. analyze logs
def count_patterns(lines: list[str]) -> dict[str, int]:
    return {name: sum(1 for line in lines if rx.search(line)) for name, rx in LOG_PATTERNS.items()}


@runbook_step(FLOW, "analyze-logs")
def analyze_logs(run: Run[HighLatencyParams], found: Identified | None) -> None:
    """Error, timeout and exception patterns in the logs the evidence holds for the service's pods."""
    if found is None:
        return
    rows = []
    for excerpt in (x for x in found.evidence.logs if x.workload == run.params.deployment):
        counts = count_patterns(excerpt.lines)
        rows.append({"pod": excerpt.pod, "container": excerpt.container, "previous": excerpt.previous, "lines": len(excerpt.lines), **counts})
        run.evidence("analyze-logs", f"Log of {excerpt.pod}/{excerpt.container} (last 30 lines)", "log", "\n".join(excerpt.lines[-30:]))
        if counts["error"] or counts["exception"] or counts["timeout"]:
            run.finding("analyze-logs", f"Log of {excerpt.pod}: {counts['error']} errors, {counts['exception']} exceptions, {counts['timeout']} timeouts",
                        Severity.info, kind="log_errors", pod=excerpt.pod or "", **{f"count_{k}": v for k, v in counts.items()})
    if not rows:
        run.note("No log of the service's pods in the evidence", kind="note")
    publish_table(artifact_key(FLOW, "analyze-logs", "patterns"), rows, "Error patterns in the logs of the service's pods")


# ------------------------------------------------------------------------------------ 4. resolve
@runbook_step(FLOW, "resolve")
def resolve(run: Run[HighLatencyParams], measured: Measured, found: Identified | None) -> Recovery | None:
    """The action that fixes the diagnosed cause (approved by mode, re-checked if the approval came later,
    run through the guard), or an escalation with the exact change."""
    p = run.params
    if found is None:
        return None
    actions = actions_for(found, run.target, p.allow_all_replicas)
    if not actions:
        escalate(run, "resolve", found)
    extra = ""
    patch = next((a for a in actions if a.kind is ActionKind.patch_resources), None)
    if patch is not None and patch.patch is not None:
        spec = next((w.template for w in found.evidence.workloads if w.name == p.deployment and w.template), None)
        limits = {c.name: c.limits.get("cpu", "") for c in (spec.containers if spec else []) if c.limits.get("cpu")}
        diff = "\n".join([f"--- deployment/{p.deployment} (current)", f"+++ deployment/{p.deployment} (proposed)"] + [
            line for c in patch.patch["spec"]["template"]["spec"]["containers"]
            for line in (f" containers[{c['name']}].resources.limits:", f"-  cpu: {limits.get(c['name'], 'unset')}",
                         f"+  cpu: {c['resources']['limits'].get('cpu', '')}")])
        extra = "## Proposed resource change (`patch_resources`)\n\n" + md_code_block(diff, "diff")
        run.evidence("resolve", "Proposed CPU limit change", "text", diff)
    approval: Approval = seek_approval(run, "resolve", actions, extra)
    if p.approval == "required":
        recheck(run, "resolve", found, focus=p.deployment, symptom=SYMPTOM, latency=[measured.observation])
    return execute_and_wait(run, "resolve", approval)


# ------------------------------------------------------------------------------------ 5. monitor
@runbook_step(FLOW, "monitor")
def monitor(run: Run[HighLatencyParams], recovery: Recovery | None) -> None:
    """p95 back below the threshold for a stable window after an executed action (escalate on timeout)."""
    p = run.params
    query = promql.latency_quantile(p.namespace, p.service, 0.95, p.rate_window, service_label=p.service_label)
    if recovery is None or not recovery.executed:
        if recovery is not None:
            value = _value(prom_instant(query))
            run.note(f"p95 now {value * 1000:.0f} ms (not waited for: nothing was changed)" if value is not None else "p95 now: no data", kind="note")
        return
    log = get_run_logger()
    deadline = time.monotonic() + p.monitor_timeout_seconds
    below_since: float | None = None
    samples: list[str] = []
    ms: float | None = None
    while True:
        value = _value(prom_instant(query))
        now = time.monotonic()
        ms = value * 1000 if value is not None else None
        samples.append(f"{utcnow():%H:%M:%S} p95={'no data' if ms is None else f'{ms:.0f} ms'}")
        if ms is not None and ms <= p.p95_threshold_ms:
            below_since = now if below_since is None else below_since
            if now - below_since >= p.monitor_stable_seconds:
                break
        else:
            below_since = None
        if now >= deadline:
            run.evidence("monitor", "p95 after the action", "query", query + "\n" + "\n".join(samples[-60:]))
            run.note("Latency did not recover; escalated", f"p95 still above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s", "escalation")
            run.finding("monitor", "Latency did not recover after the action", Severity.critical, kind="escalation",
                        detail=f"p95 above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s")
            raise StopRunbook("escalated", f"p95 still above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s; escalated", failed=True)
        log.info("monitor: %s", samples[-1])
        time.sleep(MONITOR_POLL_SECONDS)
    run.evidence("monitor", "p95 after the action", "query", query + "\n" + "\n".join(samples[-60:]))
    run.record.note(f"Latency recovered: p95 {ms:.0f} ms below {p.p95_threshold_ms:g} ms for {p.monitor_stable_seconds} s",
                    recovery.result.action.describe(), "recovered")
    run.record.outcome = "resolved"


# ------------------------------------------------------------------------------------ 6. communicate
@runbook_step(FLOW, "communicate")
def communicate(run: Run[HighLatencyParams]) -> None:
    """Status update to the configured channel (artifact + webhook)."""
    communicate_outcome(run)


def scope_of(p: HighLatencyParams) -> Scope:
    return Scope(namespace=p.namespace, service=p.service, deployment=p.deployment, service_label=p.service_label,
                 rate_window=p.rate_window, threshold_ms=p.p95_threshold_ms, lookback_minutes=p.chart_lookback_minutes)


@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def high_latency(params: HighLatencyParams, standalone: bool = True) -> State:
    """`standalone=False` when a parent flow (the incident response) writes charts and one post-mortem."""
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        run = start_run(FLOW, RUNBOOK_PATH, params)
        charts = (lambda r: publish_charts(r, scope_of(params), [r.record])) if standalone else None

        def body() -> None:
            measured = step(run, check_metrics, run)
            found = step(run, inspect_pods, run, measured)
            step(run, analyze_logs, run, found)
            recovery = step(run, resolve, run, measured, found)
            step(run, monitor, run, recovery)

        with remediation_slot(run.target):  # one runbook per workload at a time (see flows/concurrency.py)
            return drive(run, body, communicate, before_communicate=charts, write_postmortem=standalone)


def run_high_latency(params: HighLatencyParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(high_latency, params)
