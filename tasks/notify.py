"""Notification task: post a status update or escalation to the configured webhook (if any)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from k8s_runbooks.notify import send_webhook
from k8s_runbooks.settings import get_settings
from tasks._retry import runbook_task


@runbook_task(name="notify-webhook", timeout_seconds=120)
def notify(text: str, blocks: list[dict[str, Any]] | None = None) -> bool:
    """True when delivered; False when no webhook is configured (the caller's artifact is then the only record)."""
    settings = get_settings()
    delivered = send_webhook(text, settings.notify_webhook_url, settings.http_timeout_seconds, blocks=blocks)
    if not delivered:
        get_run_logger().info("no notification webhook configured (K8S_RUNBOOKS_NOTIFY_WEBHOOK_URL): artifact only")
    return delivered
