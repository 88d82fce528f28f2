"""Drill tasks: guarded fault injection and rollback, steady-state probes, alert and runbook-run lookups,
and the Pushgateway push. Every change to the cluster goes through `Guard.execute`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_client, get_run_logger

from k8s_runbooks.drills import pushgateway
from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.alertmanager import firing_alerts
from k8s_runbooks.drills.model import FaultSpec, Scorecard, SteadyState, SteadyStateReport
from k8s_runbooks.drills.probes import FAULT_VARS, steady_state
from k8s_runbooks.guard import Guard
from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.kube.pods import deployment_pods, read_deployment
from k8s_runbooks.models import Action, ActionKind, ActionResult, AuditRecord, WorkloadRef
from k8s_runbooks.settings import get_settings
from tasks._retry import runbook_task

ACTOR = "drill"


def fault_action(namespace: str, deployment: str, fault: FaultSpec, pods: list[str] | None = None) -> Action:
    target = WorkloadRef(namespace=namespace, name=deployment)
    if fault.kind == "pod-kill":
        return Action(kind=ActionKind.inject_fault, target=target, pods=pods or [], allow_all_replicas=fault.allow_all_replicas,
                      grace_period_seconds=0, reason="drill: kill critical pods")
    if fault.kind in CLUSTER_FAULTS:
        return Action(kind=ActionKind.inject_fault, target=target, patch={"fault": fault.kind}, reason=f"drill: inject {fault.kind} fault")
    return Action(kind=ActionKind.inject_fault, target=target, patch={"env": fault.env()}, reason=f"drill: inject {fault.kind} fault")


def removal_action(namespace: str, deployment: str) -> Action:
    """Every FAULT_* env var removed and every cluster fault undone (from the deployment's undo record)."""
    return Action(kind=ActionKind.remove_fault, target=WorkloadRef(namespace=namespace, name=deployment),
                  patch={"remove_env": FAULT_VARS, "clear_faults": True},
                  reason="drill rollback: remove every FAULT_* env var and undo every cluster fault")


@runbook_task(name="drill-guard-check", timeout_seconds=60)
def drill_guard_check(action: Action, flow_run_id: str | None) -> AuditRecord:
    """What the guard would decide for the fault now (nothing changed, nothing recorded)."""
    return Guard().check(action, "auto", ACTOR, flow_run_id)


@runbook_task(name="inject-fault", timeout_seconds=120)
def inject_fault(action: Action, flow_run_id: str | None) -> ActionResult:
    result = Guard().execute(action, "auto", ACTOR, flow_run_id)
    get_run_logger().info("inject fault: %s: %s", result.decision.value, result.detail)
    return result


@runbook_task(name="remove-fault", timeout_seconds=120)
def remove_fault(namespace: str, deployment: str, flow_run_id: str | None) -> ActionResult:
    result = Guard().execute(removal_action(namespace, deployment), "auto", ACTOR, flow_run_id)
    get_run_logger().info("remove fault: %s: %s", result.decision.value, result.detail)
    return result


@runbook_task(name="restore-replicas", timeout_seconds=120)
def restore_replicas(namespace: str, deployment: str, replicas: int, flow_run_id: str | None) -> ActionResult | None:
    """Scale back to the replica count before the drill (None when it already is)."""
    dep = read_deployment(get_kube(), namespace, deployment)
    if (dep.spec.replicas if dep.spec.replicas is not None else 1) == replicas:
        return None
    action = Action(kind=ActionKind.scale, target=WorkloadRef(namespace=namespace, name=deployment), replicas=replicas,
                    allow_all_replicas=True, reason="drill rollback: restore the replica count from before the drill")
    return Guard().execute(action, "auto", ACTOR, flow_run_id)


@runbook_task(name="desired-replicas", timeout_seconds=60)
def desired_replicas(namespace: str, deployment: str) -> int:
    dep = read_deployment(get_kube(), namespace, deployment)
    return dep.spec.replicas if dep.spec.replicas is not None else 1


@runbook_task(name="pick-pods", timeout_seconds=60)
def pick_pods(namespace: str, deployment: str, count: int) -> list[str]:
    """The `count` oldest live pods of the Deployment (the ones a real failure hits the hardest)."""
    kube = get_kube()
    pods = [p for p in deployment_pods(kube, read_deployment(kube, namespace, deployment)) if p.metadata.deletion_timestamp is None]
    pods.sort(key=lambda p: (p.metadata.creation_timestamp is None, p.metadata.creation_timestamp, p.metadata.name))
    return [p.metadata.name for p in pods[:count]]


@runbook_task(name="steady-state", timeout_seconds=90)
def check_steady_state(namespace: str, deployment: str, ss: SteadyState, include_alerts: bool = True,
                       include_fault: bool = True) -> SteadyStateReport:
    return steady_state(namespace, deployment, ss, include_alerts=include_alerts, include_fault=include_fault)


@runbook_task(name="firing-alerts", timeout_seconds=60)
def target_alerts(namespace: str, deployment: str, service: str = "") -> list[dict[str, Any]]:
    s = get_settings()
    return firing_alerts(s.alertmanager_url, namespace, deployment, service, timeout=s.http_timeout_seconds)


@runbook_task(name="push-drill-metrics", timeout_seconds=60)
def push_drill_metrics(card: Scorecard) -> str:
    return pushgateway.push(get_settings().pushgateway_url, card, timeout=get_settings().http_timeout_seconds)


# ------------------------------------------------------------------------------------ Prefect lookups
def deployment_id(name: str) -> UUID | None:
    """Id of the runbook deployment `flow/deployment`, None when it is not registered."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name).id
        except ObjectNotFound:
            return None


def _params_match(parameters: dict[str, Any], namespace: str, deployment: str) -> bool:
    p = parameters.get("params") if isinstance(parameters.get("params"), dict) else parameters
    return p.get("namespace") == namespace and (p.get("deployment") or p.get("service")) == deployment


@runbook_task(name="find-runbook-run", timeout_seconds=60)
def find_runbook_run(deployment_uuid: UUID, namespace: str, deployment: str, since: datetime) -> dict[str, Any] | None:
    """The runbook run the receiver created for this target after `since` (oldest first), as
    {id, state, start_time}; None when there is none yet."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterExpectedStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_uuid])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=50,
        )
    for run in runs:
        if (run.created is None or run.created >= since) and _params_match(run.parameters or {}, namespace, deployment):
            return {"id": str(run.id), "state": run.state.type.value if run.state else None,
                    "state_name": run.state.name if run.state else None, "start_time": run.start_time}
    return None


def run_states(flow_run_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(client.read_flow_run_states(UUID(flow_run_id)))


def read_run(flow_run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id))
