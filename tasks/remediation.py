"""Remediation tasks. Every change goes through `Guard.execute` (dry-run, protected namespaces, blast
radius, cooldown, audit); waits are read-only."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import get_run_logger

from k8s_runbooks import containment
from k8s_runbooks.guard import Guard
from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.kube import pods as pod_reads
from k8s_runbooks.kube import workloads
from k8s_runbooks.models import Action, ActionResult, ApprovalMode, AuditRecord, HealthReport, WorkloadRef
from k8s_runbooks.prom.client import PromClient
from k8s_runbooks.settings import get_settings
from tasks._retry import runbook_task

CONDITION_POLL_SECONDS = 2.0


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


@runbook_task(name="containment-options", timeout_seconds=60)
def containment_options(namespace: str, deployment: str, allow_all_replicas: bool) -> tuple[containment.Facts, list[Action]]:
    """What limits the impact while the cause is fixed (redirect traffic, feature flags off, scale to zero), with
    the facts the options and their undo rest on. Read-only."""
    facts = containment.read_facts(get_kube(), WorkloadRef(namespace=namespace, name=deployment))
    return facts, containment.options(facts, allow_all_replicas)


@runbook_task(name="scale-back-gradually", timeout_seconds=3600, retries=0)
def scale_back_gradually(
    namespace: str,
    deployment: str,
    to_replicas: int,
    step: int = 1,
    approval_mode: ApprovalMode = "required",
    actor: str = "auto",
    flow_run_id: str | None = None,
    stable_seconds: float = 10,
    step_timeout_seconds: float = 180,
    condition_query: str | None = None,
    condition_threshold: float = 0.0,
) -> containment.ScaleBack:
    """Scale up `step` replicas at a time through the guard; before the next step the workload must be ready with
    restarts flat for `stable_seconds`, and the alert condition (`condition_query` > `condition_threshold` is
    breached) clear. Stops at the first refusal or failed step. Not retried: each step is guarded and audited."""
    logger = get_run_logger()
    progress = _on_change(logger.info)
    settings = get_settings()

    def validate(replicas: int) -> tuple[bool, str]:
        started = time.monotonic()
        health = workloads.wait_until_healthy(namespace, deployment, replicas, stable_seconds, step_timeout_seconds,
                                              on_progress=progress)
        if not health.healthy:
            return False, health.detail
        if condition_query is None:
            return True, health.detail
        with PromClient(settings.prometheus_url, timeout=settings.http_timeout_seconds) as prom:
            while True:
                check = prom.check_threshold("alert condition", condition_query, condition_threshold, ">")
                if not check.breached and not check.no_data:
                    return True, f"{health.detail}; alert condition clear ({check.value:g})"
                if time.monotonic() - started >= step_timeout_seconds:
                    state = "no data" if check.no_data else f"still breached ({check.value:g})"
                    return False, f"{health.detail}; alert condition {state} after {step_timeout_seconds:g}s"
                time.sleep(CONDITION_POLL_SECONDS)

    current = pod_reads.workload_status(namespace, deployment).replicas
    report = containment.scale_back_gradually(
        Guard(), WorkloadRef(namespace=namespace, name=deployment), current, to_replicas, validate, step=step,
        approval_mode=approval_mode, actor=actor, flow_run_id=flow_run_id, on_progress=progress)
    logger.info("scale-back %s/%s: %d -> %d of %d%s", namespace, deployment, current, report.reached, to_replicas,
                f"; stopped: {report.stopped}" if report.stopped else "")
    return report
