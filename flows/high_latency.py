"""The high-latency runbook as a Prefect flow: check metrics → inspect pods → analyze logs → resolve
(approval) → monitor → communicate.

Each step is bound to a step of runbooks/high-latency.md by `@runbook_step`. Diagnoses and the actions
they support (ranked, then approved and executed through the guard as in the pod-crash runbook):
- CPU throttling → raise the CPU limit (patch_resources, shown as a diff) or scale out;
- a bad rollout (the current ReplicaSet is recent and p95 was fine when it was created) → rollout undo;
- outlier or stuck pods (some, not all) → restart those pods;
- nothing → no action; the run escalates with the evidence.
After an executed action the monitor step watches p95 until it stays below the threshold for a stable
window, or escalates on timeout.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import State

from flows.artifacts import artifact_key, publish_markdown, publish_table
from flows.common import RunCtx, StopRunbook, communicate_outcome, drive, execute_and_wait, run_and_build, seek_approval, start_run
from flows.concurrency import remediation_slot
from flows.params import HighLatencyParams
from flows.snapshots import Scope, publish_charts
from flows.steps import runbook_step
from k8s_runbooks.charts import first_breach, lines_from_range
from k8s_runbooks.errors import NotFound, RunbookError
from k8s_runbooks.kube.client import kube_context
from k8s_runbooks.models import Action, ActionKind, PodDiagnosis, QueryResult, Severity, WorkloadRef, WorkloadStatus, utcnow
from k8s_runbooks.postmortem.render import md_code_block
from k8s_runbooks.prom import promql
from k8s_runbooks.runbook_docs import runbooks_dir
from tasks.logs import container_logs
from tasks.metrics import prom_instant, prom_range

# Prefect's default cache policy (inputs + run id) would answer a repeated identical query from the first call.
from tasks.pods import describe_pod, find_unhealthy_pods, workload_status
from tasks.sentry import sentry_on_failure

FLOW = "high-latency"
RUNBOOK_PATH = runbooks_dir() / "high-latency.md"
MAX_PODS_EXAMINED = 5
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
class Diagnosis:
    """What the evidence says, independent of Prefect (ranked by `rank_actions`)."""

    pods: list[str] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)  # pod -> p95 ms, above the threshold
    outliers: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    throttled: dict[str, float] = field(default_factory=dict)
    bad_rollout: bool = False


@dataclass
class Ctx(RunCtx):
    status: WorkloadStatus | None = None
    pod_diagnoses: list[PodDiagnosis] = field(default_factory=list)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    p95_ms: float | None = None
    detected_at: datetime | None = None


def _value(result: QueryResult) -> float | None:
    vals = [v for _, v in result.samples if math.isfinite(v)]
    return vals[0] if vals else None


def _by_pod(result: QueryResult) -> dict[str, float]:
    return {labels["pod"]: v for labels, v in result.samples if "pod" in labels and math.isfinite(v)}


def find_outliers(pod_p95_ms: dict[str, float], threshold_ms: float, factor: float) -> tuple[dict[str, float], list[str]]:
    """(pods above the threshold, outliers): an outlier is above the threshold and `factor` times the
    median pod. When every pod is slow the cause is service-wide and no pod is an outlier."""
    slow = {p: v for p, v in pod_p95_ms.items() if v > threshold_ms}
    if not slow or len(slow) == len(pod_p95_ms):
        return slow, []
    median = statistics.median(pod_p95_ms.values())
    return slow, sorted(p for p, v in slow.items() if v > factor * max(median, 1e-9))


def cpu_millis(quantity: str | None) -> int | None:
    """Kubernetes CPU quantity -> millicores ("500m" -> 500, "1.5" -> 1500); None when unset/unknown."""
    if not quantity:
        return None
    try:
        return int(quantity[:-1]) if quantity.endswith("m") else int(round(float(quantity) * 1000))
    except ValueError:
        return None


def limit_patch(status: WorkloadStatus, factor: float) -> tuple[dict[str, dict[str, dict[str, str]]], str]:
    """(patch_resources patch raising every container's CPU limit by `factor`, the change as a diff)."""
    patch: dict[str, dict[str, dict[str, str]]] = {}
    diff = [f"--- deployment/{status.name} (current)", f"+++ deployment/{status.name} (proposed)"]
    for c in status.containers:
        current = cpu_millis(c.cpu_limit)
        if current is None:
            continue
        proposed = max(int(math.ceil(current * factor)), current + 100)
        patch[c.name] = {"limits": {"cpu": f"{proposed}m"}}
        diff += [f" containers[{c.name}].resources.limits:", f"-  cpu: {c.cpu_limit}", f"+  cpu: {proposed}m"]
    return patch, "\n".join(diff)


def rank_actions(d: Diagnosis, status: WorkloadStatus | None, params: HighLatencyParams) -> list[Action]:
    """Candidate actions, the one the evidence supports most first; [] = no diagnosis."""
    target = WorkloadRef(namespace=params.namespace, name=params.deployment)
    everything = params.allow_all_replicas
    plan: list[Action] = []
    if d.throttled and status is not None:
        patch, _diff = limit_patch(status, params.cpu_limit_factor)
        if patch:
            plan.append(Action(kind=ActionKind.patch_resources, target=target, patch=patch, evidence_score=0.85, allow_all_replicas=everything,
                               reason=f"{len(d.throttled)} pod(s) throttled in more than {params.throttling_threshold:.0%} of CPU periods; raise the CPU limit"))
        plan.append(Action(kind=ActionKind.scale, target=target, replicas=status.replicas + 1, evidence_score=0.5, allow_all_replicas=everything,
                           reason="spread the load over one more replica while the limit is reviewed"))
    if d.bad_rollout:
        plan.append(Action(kind=ActionKind.rollout_undo, target=target, evidence_score=0.7 if d.throttled else 0.9, allow_all_replicas=everything,
                           reason="latency rose with the current revision; the previous one was fast"))
    restart = sorted(set(d.outliers) | set(d.stuck))
    if restart and (len(restart) < len(d.pods) or everything):
        only = not plan
        plan.append(Action(kind=ActionKind.delete_pods, target=target, pods=restart, evidence_score=0.8 if only else 0.6, allow_all_replicas=everything,
                           reason=f"restart the {len(restart)} outlier/stuck pod(s); the other replicas keep serving"))
    return sorted(plan, key=lambda a: a.evidence_score, reverse=True)


# ------------------------------------------------------------------------------------ 1. check metrics
def _instant(ctx: Ctx, title: str, query: str) -> QueryResult | None:
    try:
        result = prom_instant(query)
    except RunbookError as exc:
        ctx.note(f"{title} unavailable", str(exc), "note")
        return None
    ctx.evidence("check-metrics", title, "query", query + "\n" + ("\n".join(
        f"{labels.get('pod', '') or 'value'} {v:.4g}" for labels, v in result.samples) or "no data"))
    return result


def _detection_time(ctx: Ctx, query: str) -> datetime | None:
    """When p95 started to exceed the threshold (start of the current breach in the incident window)."""
    p = ctx.params
    end = utcnow()
    start = end - timedelta(minutes=min(p.incident_window_minutes, p.chart_lookback_minutes))
    try:
        series = prom_range(query, start, end, f"{max(1, int((end - start).total_seconds() // 120))}s")
    except RunbookError:
        return None
    at = first_breach(lines_from_range(series, lambda _l: "p95", 1000.0), p.p95_threshold_ms)
    return datetime.fromtimestamp(at, tz=end.tzinfo) if at is not None else None


@runbook_step(FLOW, "check-metrics")
def check_metrics(ctx: Ctx) -> None:
    p = ctx.params
    ns, svc, w, lbl = p.namespace, p.service, p.rate_window, p.service_label
    p95_q = promql.latency_quantile(ns, svc, 0.95, w, service_label=lbl)
    p95 = _instant(ctx, "p95 latency (s)", p95_q)
    p99 = _instant(ctx, "p99 latency (s)", promql.latency_quantile(ns, svc, 0.99, w, service_label=lbl))
    errors = _instant(ctx, "5xx error ratio", promql.error_ratio(ns, svc, w, service_label=lbl))
    per_pod = _instant(ctx, "p95 latency per pod (s)", promql.latency_quantile_by_pod(ns, svc, 0.95, w, service_label=lbl))
    cpu = _instant(ctx, "CPU cores used per pod", promql.cpu_usage(ns, p.deployment, w))
    throttling = _instant(ctx, "CPU throttling ratio per pod", promql.cpu_throttling_ratio(ns, p.deployment, w))
    memory = _instant(ctx, "Memory working set / limit per pod", promql.memory_working_set_ratio(ns, p.deployment))

    p95_s = _value(p95) if p95 else None
    p99_s = _value(p99) if p99 else None
    err = _value(errors) if errors else None
    pod_ms = {k: v * 1000 for k, v in _by_pod(per_pod).items()} if per_pod else {}
    cpu_by = _by_pod(cpu) if cpu else {}
    thr_by = _by_pod(throttling) if throttling else {}
    mem_by = _by_pod(memory) if memory else {}
    d = ctx.diagnosis
    d.pods = sorted(set(pod_ms) | set(cpu_by) | set(thr_by))
    d.slow, d.outliers = find_outliers(pod_ms, p.p95_threshold_ms, p.outlier_factor)
    d.throttled = {k: v for k, v in thr_by.items() if v > p.throttling_threshold}
    publish_table(artifact_key(FLOW, "check-metrics", "pods"), [
        {"pod": pod, "p95 ms": round(pod_ms[pod], 1) if pod in pod_ms else None,
         "cpu cores": round(cpu_by[pod], 3) if pod in cpu_by else None,
         "throttled %": round(100 * thr_by[pod], 1) if pod in thr_by else None,
         "memory % of limit": round(100 * mem_by[pod], 1) if pod in mem_by else None,
         "slow": pod in d.slow, "outlier": pod in d.outliers}
        for pod in d.pods
    ], f"Per-pod metrics of {p.namespace}/{p.service} over {w}")

    if p95_s is None:
        ctx.finding("check-metrics", f"No latency data for {ns}/{svc}", Severity.critical,
                    detail=f"query returned no data: {p95_q}", kind="no_data")
        raise StopRunbook("escalated", f"no latency data for {ns}/{svc} (label {lbl}); cannot judge; escalated", failed=True)
    ctx.p95_ms = p95_s * 1000
    p99_text = f"{p99_s * 1000:.0f} ms" if p99_s is not None else "no data"
    err_text = f"{err:.1%}" if err is not None else "no data"
    ctx.record.impact = (f"p95 {ctx.p95_ms:.0f} ms (threshold {p.p95_threshold_ms:g} ms), p99 {p99_text}, 5xx {err_text} on "
                         f"{ns}/{svc}; {len(d.slow)} of {len(pod_ms)} pods above the threshold")
    if ctx.p95_ms <= p.p95_threshold_ms:
        ctx.note(f"p95 {ctx.p95_ms:.0f} ms is below the threshold {p.p95_threshold_ms:g} ms", "nothing to resolve", "note")
        ctx.record.outcome, ctx.record.outcome_detail = "resolved", f"p95 {ctx.p95_ms:.0f} ms is below {p.p95_threshold_ms:g} ms; nothing to do"
        return

    ctx.finding("check-metrics", f"p95 latency of {ns}/{svc} is {ctx.p95_ms:.0f} ms (> {p.p95_threshold_ms:g} ms)", Severity.critical,
                detail=f"p99 {p99_text}, 5xx {err_text}", kind="high_latency", p95_ms=round(ctx.p95_ms, 1),
                p99_ms=round(p99_s * 1000, 1) if p99_s is not None else None, threshold_ms=p.p95_threshold_ms, service=svc)
    if d.slow:
        ctx.finding("check-metrics", f"Pods above the threshold: {', '.join(f'{k} ({v:.0f} ms)' for k, v in sorted(d.slow.items()))}",
                    detail=f"outliers (> {p.outlier_factor:g}x the median pod): {', '.join(d.outliers) or 'none; every pod is slow'}",
                    kind="slow_pods", pods=sorted(d.slow), outliers=d.outliers)
    for pod, ratio in sorted(d.throttled.items()):
        ctx.finding("check-metrics", f"CPU throttling: {pod} throttled in {ratio:.0%} of CFS periods", Severity.critical,
                    detail=f"using {cpu_by.get(pod, 0):.2f} cores", kind="cpu_throttling", pod=pod, ratio=round(ratio, 3))
    for pod, ratio in sorted(mem_by.items()):
        if ratio > MEMORY_PRESSURE:
            ctx.finding("check-metrics", f"Memory pressure: {pod} at {ratio:.0%} of its memory limit", kind="memory_pressure", pod=pod, ratio=round(ratio, 3))
    if err is not None and err > ERROR_RATE_NOTABLE:
        ctx.finding("check-metrics", f"5xx error ratio of {ns}/{svc} is {err:.1%}", kind="error_rate", ratio=round(err, 4))
    ctx.detected_at = _detection_time(ctx, p95_q) or utcnow()
    ctx.record.note(f"High latency detected: p95 {ctx.p95_ms:.0f} ms on {ns}/{svc}", f"threshold {p.p95_threshold_ms:g} ms",
                    "detected", at=ctx.detected_at)


# ------------------------------------------------------------------------------------ 2. inspect pods
def split_slow_pods(slow: Iterable[str], replicaset: str, going_away: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(slow pods of `replicaset`, slow pods of other revisions that are still there). Pods the rollout already
    replaced (deleted or being deleted) are in neither: only Prometheus' rate window still remembers them."""
    ours = sorted(pod for pod in slow if pod.startswith(f"{replicaset}-"))
    others = sorted(pod for pod in slow if not pod.startswith(f"{replicaset}-") and not going_away(pod))
    return ours, others


def _going_away(namespace: str, pod: str) -> bool:
    """Deleted or being deleted (e.g. by the rollout that replaced it)."""
    try:
        return describe_pod(namespace, pod).terminating
    except NotFound:
        return True


def _detect_bad_rollout(ctx: Ctx) -> None:
    """Latency began with a new ReplicaSet: it is recent, the slow pods are its pods, and p95 was below
    the threshold when it was created. Without a p95 from then there is no evidence the previous revision was
    better (it may have crashed, or served nothing): a roll-back onto it is not proposed."""
    p, st = ctx.params, ctx.status
    if st is None or st.current_replicaset is None or st.previous_replicaset is None:
        return
    cur, prev = st.current_replicaset, st.previous_replicaset
    if cur.created_at is None or cur.created_at < utcnow() - timedelta(minutes=p.incident_window_minutes):
        return
    # A ReplicaSet names its pods `<replicaset>-<suffix>`; the slow pods come from Prometheus labels, which
    # still name pods the rollout replaced seconds ago: those do not speak against the new revision.
    ours, others = split_slow_pods(ctx.diagnosis.slow, cur.name, lambda pod: _going_away(p.namespace, pod))
    if not ours:
        return
    if others:
        ctx.note(f"Revision {cur.revision} is recent, but pods of other revisions are slow too",
                 f"{', '.join(others)}: the slowness is not the new revision's alone, so rolling back is not proposed", "note")
        return
    before: float | None = None
    try:
        before = _value(prom_instant(promql.latency_quantile(p.namespace, p.service, 0.95, p.rate_window, service_label=p.service_label),
                                     at=cur.created_at))
    except RunbookError:
        pass
    if before is None:
        ctx.note(f"Revision {cur.revision} is recent, but there is no p95 from before it",
                 f"no latency data at {cur.created_at:%H:%M:%S}: the previous revision {prev.revision} is not known to "
                 "have been faster, so rolling back onto it is not proposed", "note")
        return
    if before * 1000 > p.p95_threshold_ms:
        return  # already slow before the rollout: not its fault
    ctx.diagnosis.bad_rollout = True
    before_text = f"{before * 1000:.0f} ms"
    ctx.finding("inspect-pods", f"Latency began with revision {cur.revision} (ReplicaSet {cur.name}); previous revision {prev.revision} ({prev.name})",
                Severity.critical, detail=f"p95 when it was created: {before_text}; images {', '.join(cur.images)}",
                kind="latency_rollout", revision=cur.revision, replicaset=cur.name, previous_replicaset=prev.name,
                created_at=cur.created_at.isoformat())


@runbook_step(FLOW, "inspect-pods")
def inspect_pods(ctx: Ctx) -> None:
    p = ctx.params
    ctx.status = workload_status(p.namespace, p.deployment)
    ctx.pod_diagnoses = find_unhealthy_pods(p.namespace, p.deployment)
    publish_table(artifact_key(FLOW, "inspect-pods", "pods"), [
        {"pod": x.name, "phase": x.phase, "ready": x.ready, "restarts": x.restart_count, "unhealthy": x.unhealthy,
         "reasons": ", ".join(x.reasons), "owner": ", ".join(x.owner_chain[:1])}
        for x in ctx.pod_diagnoses
    ], f"Pods of {ctx.target}")
    stuck = [x for x in ctx.pod_diagnoses if x.phase != "Running" or not x.ready]
    ctx.diagnosis.stuck = [x.name for x in stuck]
    ctx.diagnosis.pods = sorted(set(ctx.diagnosis.pods) | {x.name for x in ctx.pod_diagnoses})
    ctx.evidence("inspect-pods", f"Pods not Running or not Ready in {ctx.target}", "pods", "\n".join(
        f"{x.name} phase={x.phase} ready={x.ready} restarts={x.restart_count} reasons={','.join(x.reasons)}" for x in stuck) or "none")
    if stuck:
        ctx.finding("inspect-pods", f"{len(stuck)} pod(s) not Running/Ready: {', '.join(x.name for x in stuck)}", kind="stuck_pods",
                    pods=[x.name for x in stuck])
    _detect_bad_rollout(ctx)


# ------------------------------------------------------------------------------------ 3. analyze logs
def count_patterns(lines: list[str]) -> dict[str, int]:
    return {name: sum(1 for line in lines if rx.search(line)) for name, rx in LOG_PATTERNS.items()}


@runbook_step(FLOW, "analyze-logs")
def analyze_logs(ctx: Ctx) -> None:
    p, d = ctx.params, ctx.diagnosis
    pods = (d.outliers or d.stuck or sorted(d.slow))[:MAX_PODS_EXAMINED]
    if not pods:
        ctx.note("No outlier pods: no logs to analyze", kind="note")
        return
    rows = []
    for pod in pods:
        try:
            excerpt = container_logs(p.namespace, pod, tail_lines=p.log_tail_lines, since_seconds=p.incident_window_minutes * 60)
        except NotFound:  # Prometheus still remembers pods a rollout has already replaced
            ctx.note(f"{pod} is gone; its log was not read", kind="note")
            continue
        counts = count_patterns(excerpt.lines)
        rows.append({"pod": pod, "lines": len(excerpt.lines), "redactions": excerpt.redactions, **counts})
        body = "\n".join(excerpt.lines[-30:]) if excerpt.lines else f"(no log: {excerpt.error or 'empty'})"
        ctx.evidence("analyze-logs", f"Log of {pod} (last 30 lines, {excerpt.redactions} redactions)", "log", body)
        if counts["error"] or counts["exception"] or counts["timeout"]:
            ctx.finding("analyze-logs", f"Log of {pod}: {counts['error']} errors, {counts['exception']} exceptions, {counts['timeout']} timeouts",
                        Severity.info, kind="log_errors", pod=pod, **{f"count_{k}": v for k, v in counts.items()})
    publish_table(artifact_key(FLOW, "analyze-logs", "patterns"), rows, "Error patterns in the logs of the slow pods")


# ------------------------------------------------------------------------------------ 4. resolve
@runbook_step(FLOW, "resolve")
def resolve(ctx: Ctx) -> None:
    p = ctx.params
    ctx.plan = rank_actions(ctx.diagnosis, ctx.status, p)
    if not ctx.plan:
        ctx.finding("resolve", "No diagnosis: no throttling, no recent rollout, no outlier or stuck pods", Severity.critical,
                    detail="escalated with the evidence; nothing was changed", kind="no_diagnosis")
        publish_markdown(artifact_key(FLOW, "resolve", "plan"), "# Resolution plan\n\nNo diagnosis: no action. Escalated with the evidence.")
        ctx.note("No diagnosis; escalated", "no action supported by the evidence; nothing was changed", "escalation")
        raise StopRunbook("escalated", "no diagnosis; escalated with the evidence, nothing was changed", failed=True)
    extra = ""
    patch = next((a for a in ctx.plan if a.kind is ActionKind.patch_resources), None)
    if patch is not None and ctx.status is not None:
        extra = "## Proposed resource change (`patch_resources`)\n\n" + md_code_block(limit_patch(ctx.status, p.cpu_limit_factor)[1], "diff")
        ctx.evidence("resolve", "Proposed CPU limit change", "text", limit_patch(ctx.status, p.cpu_limit_factor)[1])
    seek_approval(ctx, "resolve", extra)
    execute_and_wait(ctx, "resolve")


# ------------------------------------------------------------------------------------ 5. monitor
@runbook_step(FLOW, "monitor")
def monitor(ctx: Ctx) -> None:
    p = ctx.params
    query = promql.latency_quantile(p.namespace, p.service, 0.95, p.rate_window, service_label=p.service_label)
    if ctx.record.outcome == "dry-run" or ctx.chosen is None:
        value = _value(prom_instant(query))
        ctx.note(f"p95 now {value * 1000:.0f} ms (not waited for: nothing was changed)" if value is not None else "p95 now: no data", kind="note")
        return
    log = get_run_logger()
    deadline = time.monotonic() + p.monitor_timeout_seconds
    below_since: float | None = None
    samples: list[str] = []
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
            ctx.evidence("monitor", "p95 after the action", "query", query + "\n" + "\n".join(samples[-60:]))
            ctx.note("Latency did not recover; escalated", f"p95 still above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s", "escalation")
            ctx.finding("monitor", "Latency did not recover after the action", Severity.critical, kind="escalation",
                        detail=f"p95 above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s")
            raise StopRunbook("escalated", f"p95 still above {p.p95_threshold_ms:g} ms after {p.monitor_timeout_seconds} s; escalated", failed=True)
        log.info("monitor: %s", samples[-1])
        time.sleep(MONITOR_POLL_SECONDS)
    ctx.evidence("monitor", "p95 after the action", "query", query + "\n" + "\n".join(samples[-60:]))
    ctx.record.note(f"Latency recovered: p95 {ms:.0f} ms below {p.p95_threshold_ms:g} ms for {p.monitor_stable_seconds} s",
                    f"{ctx.chosen.describe()}", "recovered")
    ctx.record.outcome = "resolved"


# ------------------------------------------------------------------------------------ 6. communicate
@runbook_step(FLOW, "communicate")
def communicate(ctx: Ctx) -> None:
    communicate_outcome(ctx)


def scope_of(p: HighLatencyParams) -> Scope:
    return Scope(namespace=p.namespace, service=p.service, deployment=p.deployment, service_label=p.service_label,
                 rate_window=p.rate_window, threshold_ms=p.p95_threshold_ms, lookback_minutes=p.chart_lookback_minutes)


@flow(name=FLOW, on_failure=[sentry_on_failure(FLOW)], log_prints=True)
def high_latency(params: HighLatencyParams, standalone: bool = True) -> State:
    """`standalone=False` when a parent flow (the incident response) writes charts and one post-mortem."""
    with kube_context(params.kube_context):  # every Kubernetes call of this run goes to that cluster
        ctx = start_run(Ctx, FLOW, RUNBOOK_PATH, params)
        charts = (lambda c: publish_charts(c, scope_of(params), [c.record])) if standalone else None
        with remediation_slot(ctx.target):  # one runbook per workload at a time (see flows/concurrency.py)
            return drive(ctx, (check_metrics, inspect_pods, analyze_logs, resolve, monitor), communicate,
                         before_communicate=charts, write_postmortem=standalone)


def run_high_latency(params: HighLatencyParams) -> tuple[str, State, Path | None]:
    """Run the flow in this process (for the CLI); rebuild the post-mortem once the final state is known."""
    return run_and_build(high_latency, params)
