"""Alertmanager v2 reads: the firing alerts of one target."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from k8s_runbooks.errors import TransientError, from_http_status


def firing_alerts(url: str, namespace: str, deployment: str, service: str = "", *, timeout: float = 10.0,
                  alertnames: list[str] | None = None) -> list[dict[str, Any]]:
    """Active (not silenced/inhibited) alerts of namespace whose `deployment` or `service` label is the target.
    Namespace is validated by the caller (DNS label), so quoting it into the matcher is safe."""
    params = [("filter", f'namespace="{namespace}"'), ("active", "true"), ("silenced", "false"), ("inhibited", "false")]
    try:
        r = httpx.get(f"{url.rstrip('/')}/api/v2/alerts", params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TransientError(f"Alertmanager at {url} unreachable: {exc.__class__.__name__}", hint="is Alertmanager up?") from exc
    if r.status_code >= 400:
        raise from_http_status(r.status_code, "read Alertmanager alerts", r.text[:300])
    names = {service or deployment, deployment}
    out = []
    for alert in r.json():
        labels = alert.get("labels") or {}
        if (alert.get("status") or {}).get("state", "active") != "active":
            continue
        if labels.get("deployment") not in names and labels.get("service") not in names:
            continue
        if alertnames and labels.get("alertname") not in alertnames:
            continue
        out.append(alert)
    return out


def starts_at(alert: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(alert.get("startsAt", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
