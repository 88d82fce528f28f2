"""Root cause, action items and lessons generated from a run's structured findings.

Findings carry `evidence["kind"]` (set by the flow that produced them); each kind maps to a root-cause
statement and follow-up work. Anything a finding states itself (`root_cause`, `action_items`) is kept.
"""

from __future__ import annotations

from k8s_runbooks.postmortem.model import RunRecord


def _add(items: list[str], text: str | None) -> None:
    if text and text not in items:
        items.append(text)


_LATENCY_KINDS = {"high_latency", "cpu_throttling", "latency_rollout", "slow_pods", "memory_pressure"}


def _latency(title: str, ev: dict[str, object], target: str, causes: list[str], items: list[str]) -> None:
    kind = ev.get("kind")
    if kind == "high_latency":
        _add(items, f"Keep a p95 latency alert on {target} at {ev.get('threshold_ms')} ms and review it against the SLO.")
    elif kind == "cpu_throttling":
        _add(causes, f"CPU starvation: {title}; requests waited for CPU while the pod was throttled.")
        _add(items, f"Right-size the CPU limit/request of {target} from its usage, and alert on a throttling ratio above 25%.")
    elif kind == "latency_rollout":
        _add(causes, f"The latency began with revision {ev.get('revision')} (ReplicaSet {ev.get('replicaset')}, created {ev.get('created_at')}); the previous revision {ev.get('previous_replicaset')} was fast.")
        _add(items, f"Review the change in revision {ev.get('revision')} of {target} before rolling it out again.")
        _add(items, f"Add latency to the canary analysis of {target} rollouts (p95 against the previous revision).")
    elif kind == "slow_pods" and ev.get("outliers"):
        _add(causes, f"Outlier pods much slower than the rest: {', '.join(str(p) for p in ev.get('outliers') or [])}.")
        _add(items, f"Find why single pods of {target} slow down (node, noisy neighbour, stuck state) and add a per-pod latency alert.")
    elif kind == "memory_pressure":
        _add(items, f"Check the memory limit of {target}: {title}.")


_PREVENT = {
    "admission": "Alert on quota usage above 80% and on controller FailedCreate events before pods go missing.",
    "scheduling": "Check node labels, taints and capacity in CI against the workload's placement rules before rollout.",
    "startup": "Validate image references, pull secrets and referenced Secrets/ConfigMaps in CI (e.g. kubeconform + a registry check).",
    "runtime": "Add the failure to the rollout's canary analysis (restarts, readiness) so a bad revision stops itself.",
    "routing": "Test Service selectors, ports and addresses in CI against the Deployments they front (endpoints must not be empty).",
    "performance": "Keep latency and saturation alerts per service and compare each rollout's latency with the previous revision.",
    "infrastructure": "Monitor node components (kubelet, container runtime, kube-proxy, scheduler) and node network quality.",
}


def _from_diagnosis(record: RunRecord, causes: list[str], items: list[str], lessons: list[str]) -> None:
    """Root cause and follow-ups from the engine's ranked hypotheses and the plan that answered them."""
    if not record.hypotheses:
        return
    top = record.hypotheses[0]
    facts = "; ".join(f.text for f in top.facts[:2])
    _add(causes, f"{top.summary} ({top.cause.value}, confidence {top.confidence:.2f}; evidence: {facts})")
    for step in record.plan[:1]:
        if step.escalation is not None:
            _add(items, f"{step.escalation.summary}: {step.escalation.change.splitlines()[0]}")
        elif step.action is not None and not any(a.executed for a in record.actions):
            _add(items, f"Carry out or reject the planned fix: {step.action.describe()} ({step.action.reason}).")
    target = f"{record.namespace}/{top.object.name}"
    if top.cause.value == "oom-killed":
        limit = top.details.get("memory_limit") or "its limit"
        _add(items, f"Raise the memory limit of {target} above {limit} (or fix the leak) after checking the working-set trend before each kill.")
        _add(items, f"Add a memory alert for {target}: container working set above 80% of its limit for 5 minutes.")
    if top.details.get("introduced_by_revision"):
        _add(items, f"Review the change in revision {top.details['introduced_by_revision']} of {target} before rolling it out again.")
    _add(items, _PREVENT[top.layer.value])
    if top.confidence < 0.6:
        _add(lessons, "The diagnosis was uncertain (top confidence below 0.6); add the signal the on-call used to the runbook.")


def analyse(record: RunRecord) -> tuple[list[str], list[str], list[str]]:
    """-> (root cause statements, action items, lessons learned)."""
    causes: list[str] = []
    items: list[str] = []
    lessons: list[str] = []
    target = f"{record.namespace}/{record.deployment}" if record.deployment else "the workload"
    sentry = [f for f in record.findings if f.evidence.get("kind") == "sentry_issue"]

    for f in record.findings:
        ev = f.evidence
        kind = ev.get("kind")
        if kind == "oom":
            limit = ev.get("memory_limit") or "unknown"
            _add(causes, f"OOMKilled: container {ev.get('container')} exceeded its memory limit {limit} (exit {ev.get('exit_code', 137)}), so the kubelet killed it and it restarted in a loop.")
            _add(items, f"Raise the memory limit of {target} above {limit} (or fix the leak) after checking the working-set trend before each kill.")
            _add(items, f"Add a memory alert for {target}: container working set above 80% of its limit for 5 minutes.")
        elif kind == "crash_error":
            line = ev.get("last_log_line") or ""
            said = f"; last log line: \"{line}\"" if line else ""
            _add(causes, f"Container {ev.get('container')} exited with code {ev.get('exit_code')}{said}.")
            if line:
                _add(items, f"Fix the code path that logs \"{line}\" and add a test for it.")
            for s in sentry:
                link = s.evidence.get("permalink") or s.evidence.get("short_id") or s.title
                _add(items, f"Link Sentry issue {s.evidence.get('short_id') or ''} ({link}) to the fix.".replace("  ", " "))
        elif kind == "bad_rollout":
            _add(causes, f"The crashes began with revision {ev.get('revision')} (ReplicaSet {ev.get('replicaset')}, created {ev.get('created_at')}); the previous revision {ev.get('previous_replicaset')} was healthy.")
            _add(items, f"Review the change in revision {ev.get('revision')} of {target} before rolling it out again.")
            _add(items, f"Add canary analysis (restarts, error rate) to rollouts of {target} so a crashing revision is stopped automatically.")
        elif kind in _LATENCY_KINDS:
            _latency(f.title, ev, target, causes, items)
        elif kind in ("image_pull", "config_error"):
            _add(causes, f.title)
        elif kind == "no_diagnosis":
            _add(lessons, "The runbook found no known cause (throttling, rollout, outlier pods); extend it with the case the on-call finds.")
        elif kind == "escalation":
            _add(lessons, f"Nobody approved the containment in time ({f.detail}); review the approval route and on-call paging.")
        elif kind == "approval_rejected":
            _add(lessons, f"The approver rejected the automated plan ({f.detail}); capture why in the runbook.")
        _add(causes, f.root_cause)
        for item in f.action_items:
            _add(items, item)

    _from_diagnosis(record, causes, items, lessons)
    if not causes and not record.hypotheses and record.findings:
        _add(causes, "Undetermined from the collected evidence; see the findings and evidence appendix.")
    if record.outcome in ("resolved", "mitigated"):
        _add(lessons, "The automated runbook identified the cause and restored the workload; keep the runbook and its alert route as they are.")
    if record.outcome == "failed":
        _add(lessons, "Automation did not restore the workload; a human had to take over — extend the runbook with the missing case.")
    if record.drill:
        _add(lessons, "This was a drill: compare the time to detect and to recover with the previous drill.")
    else:
        _add(items, "Conduct a failure drill for this scenario to test the incident response plan.")
    return causes, items, lessons
