"""Report runbook failures to Sentry with sentry-sdk, with flow-run context and without secrets.

- `init_reporting(dsn)` is idempotent (same DSN: no-op; other DSN: re-initialised).
- Local variables are never attached (`include_local_variables=False`) and default integrations are off
  (no logging/excepthook capture behind our back): only what `report_failure` sends leaves the process.
- `before_send` runs every string of the event through `k8s_runbooks.redact.redact`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sentry_sdk
from pydantic import SecretStr

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0
TAG_KEYS = ("flow_run_id", "flow_name", "runbook", "namespace", "deployment")

_lock = threading.Lock()
_initialised_dsn: str | None = None


def init_reporting(dsn: SecretStr | str | None, *, environment: str | None = None, release: str | None = None) -> bool:
    """Initialise sentry-sdk once per DSN. Returns False (and reports nothing) when no DSN is set."""
    global _initialised_dsn
    value = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    if not value:
        return False
    with _lock:
        if _initialised_dsn == value and sentry_sdk.get_client().is_active():
            return True
        sentry_sdk.init(
            dsn=value,
            environment=environment,
            release=release,
            default_integrations=False,
            auto_enabling_integrations=False,
            include_local_variables=False,
            max_request_body_size="never",
            before_send=_before_send,
            before_breadcrumb=_before_breadcrumb,
        )
        _initialised_dsn = value
    return True


def is_initialised() -> bool:
    return _initialised_dsn is not None and sentry_sdk.get_client().is_active()


def report_failure(exc: BaseException, context: dict[str, Any], *, flush_timeout: float = FLUSH_TIMEOUT_S) -> str | None:
    """Capture `exc` with the run context as tags (for search) and a `runbook` context (for reading).

    Returns the event id, or None when reporting is not initialised. Never raises.
    """
    if not is_initialised():
        return None
    try:
        with sentry_sdk.new_scope() as scope:
            for key in TAG_KEYS:
                if context.get(key) is not None:
                    scope.set_tag(key, str(context[key]))
            scope.set_context("runbook", {k: _plain(v) for k, v in context.items()})
            event_id = scope.capture_exception(exc)
        sentry_sdk.flush(timeout=flush_timeout)
        return event_id
    except Exception as err:  # noqa: BLE001 - reporting must never break the runbook's own failure path
        log.warning("could not report the failure to Sentry: %s", type(err).__name__)
        return None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _redact_text(text: str) -> str:
    try:
        from k8s_runbooks.redact import redact
    except ImportError:  # pragma: no cover - redact.py is part of the project; this guards partial installs
        return text
    return redact(text)[0]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub(v) for v in value)
    return value


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    # Every string: exception values, messages, tags, contexts, extra, breadcrumbs, frame context lines.
    return _scrub(event)


def _before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    return _scrub(crumb)
