"""The one retry policy of every Prefect task in this project.

Transient errors (`errors.TransientError`: 5xx, 429, timeouts, connection errors, conflicts) are retried
with exponential backoff and jitter; anything else (403, 404, invalid input, guard refusals, bugs) fails
at once. A `Retry-After` carried by the error is honoured by waiting the difference before the retry.

Usage:
    from tasks._retry import runbook_task

    @runbook_task(name="find-unhealthy-pods", timeout_seconds=60)
    def find_unhealthy_pods(namespace: str, deployment: str) -> list[PodDiagnosis]: ...
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from k8s_runbooks.errors import is_transient

RETRIES = 3
# Delays 1 s, 2 s, 4 s before jitter. K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS scales them (read once at import;
# the fault tests use 0.1 so an outage that exhausts every retry of a dozen queries takes seconds, not minutes).
BACKOFF_FACTOR = float(os.environ.get("K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS", "1.0"))
RETRY_DELAYS: list[float] = exponential_backoff(backoff_factor=BACKOFF_FACTOR)(RETRIES)
JITTER_FACTOR = 0.5
MAX_RETRY_AFTER_SECONDS = 60.0  # never let an upstream Retry-After stall a runbook longer than this

F = TypeVar("F", bound=Callable[..., Any])


def _exception_of(state: State[Any]) -> BaseException | None:
    data = state.data
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be loaded is simply "not transient"
        return None
    return result if isinstance(result, BaseException) else None


def retry_only_transient(task_: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """`retry_condition_fn`: retry only `TransientError`; wait out a longer Retry-After first."""
    exc = _exception_of(state)
    if exc is None or not is_transient(exc):
        return False
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        attempt = max(0, (task_run.run_count or 1) - 1)
        planned = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        extra = min(float(retry_after), MAX_RETRY_AFTER_SECONDS) - planned
        if extra > 0:
            time.sleep(extra)
    return True


def runbook_task(*, name: str, timeout_seconds: float = 120, retries: int = RETRIES, **kwargs: Any) -> Callable[[F], F]:
    """`@task` with the shared retry policy. Extra keyword arguments go to `prefect.task`.

    Caching is off: Prefect 3's default policy returns the first result for identical inputs within a
    flow run, and runbooks poll the same question (is it healthy yet? is the alert condition clear?)
    until the answer changes. Evidence must always be read fresh."""
    kwargs.setdefault("cache_policy", NO_CACHE)
    return task(  # type: ignore[return-value]
        name=name,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=BACKOFF_FACTOR),
        retry_jitter_factor=JITTER_FACTOR,
        retry_condition_fn=retry_only_transient,
        timeout_seconds=timeout_seconds,
        **kwargs,
    )
