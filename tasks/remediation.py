"""Remediation tasks. Every change goes through `Guard.execute` (dry-run, protected namespaces, blast
radius, cooldown, audit); waits are read-only."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger

from k8s_runbooks.guard import Guard
from k8s_runbooks.kube import pods as pod_reads
from k8s_runbooks.kube import workloads
from k8s_runbooks.models import Action, ActionKind, ActionResult, ApprovalMode, AuditRecord, HealthReport, WorkloadRef
from tasks._retry import runbook_task


def _on_change(log: Callable[[str], object]) -> Callable[[str], None]:
    """Progress callback that logs a line only when the progress text changes (waits poll every second)."""
    last: list[str] = [""]

    def report(message: str) -> None:
        if message != last[0]:
            last[0] = message
            log(message)

    return report


@runbook_task(name="plan-is-allowed", timeout_seconds=60)
def plan_is_allowed(action: Action, approval_mode: ApprovalMode, actor: str, flow_run_id: str | None) -> AuditRecord:
    """What the guard would decide now (no change, nothing recorded)."""
    return Guard().check(action, approval_mode, actor, flow_run_id)


@runbook_task(name="execute-action", timeout_seconds=120)
def execute_action(action: Action, approval_mode: ApprovalMode, actor: str, flow_run_id: str | None) -> ActionResult:
    """The one guarded path: guard → (dry-run: record only) → execute → audit."""
    result = Guard().execute(action, approval_mode, actor, flow_run_id)
    get_run_logger().info("%s: %s", result.decision.value, result.detail)
    return result


@runbook_task(name="wait-until-healthy", timeout_seconds=900, retries=1)
def wait_until_healthy(
    namespace: str,
    deployment: str,
    expected_replicas: int | None = None,
    stable_seconds: float = 20,
    timeout_seconds: float = 180,
) -> HealthReport:
    logger = get_run_logger()
    return workloads.wait_until_healthy(
        namespace, deployment, expected_replicas, stable_seconds, timeout_seconds, on_progress=_on_change(logger.info)
    )


@runbook_task(name="scale-back-gradually", timeout_seconds=1800, retries=1)
def scale_back_gradually(
    namespace: str,
    deployment: str,
    to_replicas: int,
    step: int = 1,
    approval_mode: ApprovalMode = "required",
    actor: str = "auto",
    flow_run_id: str | None = None,
    step_timeout_seconds: float = 120,
) -> list[ActionResult]:
    """Scale up `step` replicas at a time through the guard, waiting for readiness after each step.
    Stops at the first step that is refused or does not become ready."""
    logger = get_run_logger()
    guard = Guard()
    current = pod_reads.workload_status(namespace, deployment).replicas
    results: list[ActionResult] = []
    step = max(1, step)
    while current < to_replicas:
        target = min(current + step, to_replicas)
        action = Action(
            kind=ActionKind.scale,
            target=WorkloadRef(namespace=namespace, name=deployment),
            replicas=target,
            reason=f"gradual recovery to {to_replicas} replicas",
        )
        result = guard.execute(action, approval_mode, actor, flow_run_id)
        results.append(result)
        if not result.executed:
            logger.info("scale-back stopped at %d replicas: %s", current, result.detail)
            break
        if not workloads.wait_for_ready_replicas(namespace, deployment, target, step_timeout_seconds, on_progress=_on_change(logger.info)):
            logger.warning("%s/%s did not reach %d ready replicas in %.0fs; stopping", namespace, deployment, target, step_timeout_seconds)
            break
        current = target
    return results
