"""Container log tasks: always redacted before they are returned (and so before any artifact)."""

from __future__ import annotations

from k8s_runbooks.kube import logs as core
from k8s_runbooks.models import LogExcerpt
from tasks._retry import runbook_task


@runbook_task(name="container-logs", timeout_seconds=60)
def container_logs(
    namespace: str,
    pod: str,
    container: str | None = None,
    previous: bool = False,
    tail_lines: int = 200,
    since_seconds: int | None = None,
    limit_bytes: int = 256_000,
) -> LogExcerpt:
    return core.container_logs(namespace, pod, container, previous, tail_lines, since_seconds, limit_bytes)
