"""Kubernetes event tasks (read-only)."""

from __future__ import annotations

from k8s_runbooks.kube import events as core
from k8s_runbooks.models import KubeEvent
from tasks._retry import runbook_task


@runbook_task(name="object-events", timeout_seconds=60)
def object_events(namespace: str, kind: str, name: str, include_owners: bool = True) -> list[KubeEvent]:
    """Events of the object and (for pods/ReplicaSets) its owners, oldest first."""
    return core.object_events(namespace, kind, name, include_owners)
