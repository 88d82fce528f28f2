"""Sentry tasks: recent issues of a service in the incident window, and the flow `on_failure` hook."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from prefect import get_run_logger
from pydantic import SecretStr

from k8s_runbooks.models import SentryIssue
from k8s_runbooks.sentry import api, reporting
from k8s_runbooks.settings import Settings, get_settings
from tasks._retry import runbook_task


def _token(settings: Settings) -> SecretStr | None:
    """The Sentry token: the setting, else the Prefect Secret block named by `sentry_token_block`."""
    if settings.sentry_token:
        return settings.sentry_token
    if settings.sentry_token_block:
        from prefect.blocks.system import Secret

        value = Secret.load(settings.sentry_token_block).get()
        return SecretStr(str(value)) if value else None
    return None


@runbook_task(name="recent-sentry-issues", timeout_seconds=90)
def recent_sentry_issues(service: str, start: datetime, end: datetime) -> list[SentryIssue]:
    """Unresolved Sentry issues of `service` in [start, end]; [] with a logged note when not configured."""
    settings = get_settings()
    token = _token(settings)
    reason = api.not_configured_reason(settings, token)
    if reason:
        get_run_logger().info("%s; no Sentry evidence collected", reason)
        return []
    assert token is not None
    target = api.target_for(service, settings, token)
    issues = api.recent_issues(target, start, end, timeout=settings.http_timeout_seconds)
    get_run_logger().info("Sentry: %d unresolved issue(s) in %s/%s", len(issues), target.org, target.project)
    return issues


def _context_from(flow: Any, flow_run: Any, runbook: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": getattr(flow_run, "name", None),
        "flow_name": getattr(flow, "name", None),
        "runbook": runbook,
    }
    # Parameters may be flat (namespace=..., deployment=...) or one pydantic model / dict holding them.
    params = dict(getattr(flow_run, "parameters", None) or {})
    candidates = [params] + [v if isinstance(v, dict) else getattr(v, "__dict__", {}) for v in params.values()]
    for key in ("namespace", "deployment"):
        for candidate in candidates:
            if isinstance(candidate, dict) and isinstance(candidate.get(key), str):
                context[key] = candidate[key]
                break
    return context


def sentry_on_failure(runbook: str) -> Callable[[Any, Any, Any], None]:
    """A flow `on_failure` hook that reports the failure to Sentry (when `sentry_dsn` is set).

        @flow(on_failure=[sentry_on_failure("pod-crash")])
    """

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        settings = get_settings()
        if not reporting.init_reporting(settings.sentry_dsn):
            return
        exc = state.data if isinstance(state.data, BaseException) else None
        if exc is None:
            try:
                result = state.result(raise_on_failure=False)
            except Exception as err:  # noqa: BLE001 - an unreadable result is still a failure worth reporting
                result = err
            exc = result if isinstance(result, BaseException) else RuntimeError(state.message or "flow run failed")
        reporting.report_failure(exc, _context_from(flow, flow_run, runbook))

    hook.__name__ = f"sentry_on_failure_{runbook.replace('-', '_')}"
    return hook
