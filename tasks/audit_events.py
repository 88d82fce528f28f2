"""Every guard audit record is also a Prefect event (`k8s-runbooks.guard.<decision>`), so decisions show in the
Prefect UI's event feed next to the flow run and can trigger automations (e.g. notify on every refusal).

The core writes the durable, append-only record (`guard.append_audit`) and stays Prefect-free; this module
installs the hook that emits it. `tasks/__init__.py` installs it, so any process that runs a task has it.
"""

from __future__ import annotations

import uuid

from prefect.events import emit_event

from k8s_runbooks.guard import add_audit_hook
from k8s_runbooks.models import AuditRecord

EVENT_PREFIX = "k8s-runbooks.guard"


def workload_resource_id(namespace: str, kind: str, name: str) -> str:
    return f"k8s-runbooks.workload.{namespace}.{kind.lower()}.{name}"


def emit_audit_event(record: AuditRecord) -> None:
    """Emit `record` as `k8s-runbooks.guard.allowed|refused|dry-run` about the workload, related to its run."""
    target = record.action.target
    resource = {"prefect.resource.id": workload_resource_id(target.namespace, target.kind, target.name),
                "prefect.resource.name": f"{target.namespace}/{target.name}",
                "k8s-runbooks.namespace": target.namespace, "k8s-runbooks.kind": target.kind,
                "k8s-runbooks.action": record.action.kind.value}
    related = []
    if record.flow_run_id:
        try:
            related.append({"prefect.resource.id": f"prefect.flow-run.{uuid.UUID(record.flow_run_id)}",
                            "prefect.resource.role": "flow-run"})
        except ValueError:
            pass  # not a Prefect run id (a test's or a script's label): no related run
    emit_event(event=f"{EVENT_PREFIX}.{record.decision.value}", resource=resource, related=related,
               occurred=record.at, payload=record.model_dump(mode="json"))


def install() -> None:
    add_audit_hook(emit_audit_event)
