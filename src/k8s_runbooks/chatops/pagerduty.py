"""PagerDuty Events API v2: trigger and resolve one alert per incident (`dedup_key`).

`POST /v2/enqueue` with `{"routing_key", "event_action": "trigger"|"resolve", "dedup_key", "payload": {...}}`
answers 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`; 400 an invalid event
(permanent), 429 and 5xx are retried. The routing key is a secret: never logged, never in an error.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from k8s_runbooks.errors import InvalidInput, PermanentError, TransientError

log = logging.getLogger(__name__)

Severity = Literal["critical", "error", "warning", "info"]
# Alert severities as Alertmanager rules and Grafana name them, mapped onto the four PagerDuty knows.
_SEVERITY: dict[str, Severity] = {"critical": "critical", "page": "critical", "high": "critical", "error": "error",
                                  "major": "error", "warning": "warning", "warn": "warning", "minor": "warning",
                                  "info": "info", "informational": "info", "low": "info", "none": "info"}


def severity_from_alert(label: str | None, default: Severity = "critical") -> Severity:
    """The PagerDuty severity of an alert's `severity` label (unknown or missing: `default`)."""
    return _SEVERITY.get((label or "").strip().lower(), default)


class PagerDuty:
    def __init__(self, url: str = "https://events.pagerduty.com/v2/enqueue", timeout: float = 5.0, attempts: int = 3) -> None:
        self.url = url
        self.timeout = timeout
        self.attempts = max(1, attempts)

    def trigger(self, routing_key: SecretStr, dedup_key: str, summary: str, source: str, severity: Severity, *,
                component: str | None = None, group: str | None = None, details: dict[str, Any] | None = None,
                links: list[dict[str, str]] | None = None) -> str:
        """Open (or update) the alert `dedup_key`; returns the dedup key PagerDuty confirmed."""
        payload: dict[str, Any] = {"summary": summary[:1024], "source": source[:255], "severity": severity}
        if component:
            payload["component"] = component
        if group:
            payload["group"] = group
        if details:
            payload["custom_details"] = details
        event: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key[:255], "payload": payload,
                                 "client": "k8s-runbooks"}
        if links:
            event["links"] = links
            event["client_url"] = links[0]["href"]
        return self._send(routing_key, event)

    def resolve(self, routing_key: SecretStr, dedup_key: str) -> str:
        return self._send(routing_key, {"event_action": "resolve", "dedup_key": dedup_key[:255]})

    def _send(self, routing_key: SecretStr, event: dict[str, Any]) -> str:
        key = routing_key.get_secret_value()
        if not key:
            raise InvalidInput("empty PagerDuty routing key", hint="set K8S_RUNBOOKS_PAGERDUTY_ROUTING_KEY")
        body = {"routing_key": key, **event}
        last: TransientError | None = None
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(self.attempts):
                if last is not None:
                    time.sleep(last.retry_after if last.retry_after is not None else 0.5 * 2 ** (attempt - 1))
                try:
                    return self._once(client, body)
                except TransientError as exc:
                    last = exc
                    log.info("PagerDuty %s attempt %d/%d failed: %s", event["event_action"], attempt + 1, self.attempts, exc.message)
        assert last is not None
        raise last

    def _once(self, client: httpx.Client, body: dict[str, Any]) -> str:
        try:
            response = client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise TransientError(f"PagerDuty did not answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach PagerDuty ({type(exc).__name__})") from None
        status = response.status_code
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if status == 202 and answer.get("status") == "success":
            return str(answer.get("dedup_key") or body["dedup_key"])
        if status == 429:
            raise TransientError("PagerDuty rate limited the event (HTTP 429)", retry_after=2.0)
        if status >= 500 or status == 408:
            raise TransientError(f"PagerDuty failed with HTTP {status}")
        errors = "; ".join(str(e) for e in answer.get("errors") or [])[:300]
        raise PermanentError(f"PagerDuty refused the event (HTTP {status}: {answer.get('message') or answer.get('status') or ''}"
                             f"{'; ' + errors if errors else ''})", hint="check the routing key and the event fields")
