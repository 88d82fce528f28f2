"""Pod and Deployment diagnosis tasks (read-only)."""

from __future__ import annotations

from k8s_runbooks.kube import pods as core
from k8s_runbooks.models import PodDiagnosis, WorkloadStatus
from tasks._retry import runbook_task


@runbook_task(name="find-unhealthy-pods", timeout_seconds=60)
def find_unhealthy_pods(namespace: str, deployment: str) -> list[PodDiagnosis]:
    """Unhealthy pods of exactly this Deployment, with reasons in plain words."""
    return core.find_unhealthy_pods(namespace, deployment)


@runbook_task(name="describe-pod", timeout_seconds=60)
def describe_pod(namespace: str, name: str) -> PodDiagnosis:
    return core.describe_pod(namespace, name)


@runbook_task(name="workload-status", timeout_seconds=60)
def workload_status(namespace: str, deployment: str) -> WorkloadStatus:
    return core.workload_status(namespace, deployment)
