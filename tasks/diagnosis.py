"""Diagnosis tasks: gather the evidence of an incident from the live cluster (read-only, retried on transient
API errors), and rank its causes with the Prefect-free engine."""

from __future__ import annotations

from prefect import get_run_logger

from k8s_runbooks.diagnosis import engine
from k8s_runbooks.diagnosis.evidence import Evidence, LatencyObservation
from k8s_runbooks.diagnosis.hypothesis import Diagnosis
from k8s_runbooks.diagnosis.sources import live
from tasks._retry import runbook_task


@runbook_task(name="collect-evidence", timeout_seconds=180)
def collect_evidence(namespace: str, service: str | None = None, latency: list[LatencyObservation] | None = None) -> Evidence:
    """Pods, workloads, events, services, quotas, volumes, nodes, logs of the pods in trouble (redacted) and
    Prometheus anomalies of `namespace`; a runbook's own latency measurement joins them. Each stage of the
    collection is a line of the run's log (what was read, and when)."""
    evidence = live.collect(namespace, service=service, progress=get_run_logger().info)
    evidence.latency = list(latency or [])
    return evidence


@runbook_task(name="diagnose-evidence", timeout_seconds=30, retries=0)
def diagnose_evidence(evidence: Evidence, symptom: str = "", focus: str | None = None) -> Diagnosis:
    """Ranked causes with the facts each rests on (pure, deterministic: retrying would give the same answer)."""
    return engine.diagnose(evidence, symptom, focus=focus)
