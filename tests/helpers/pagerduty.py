"""A local PagerDuty Events API v2: `POST /v2/enqueue` answers 202 `{"status": "success", "message": "Event
processed", "dedup_key": ...}`; an invalid event 400 `{"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}`. Open alerts are tracked per dedup key, as PagerDuty does."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.helpers.http_receiver import LocalHTTPServer

SEVERITIES = {"critical", "error", "warning", "info"}


class LocalPagerDuty(LocalHTTPServer):
    def __init__(self, routing_keys: set[str]) -> None:
        self.routing_keys = set(routing_keys)
        self.events: list[dict[str, Any]] = []
        self.open: dict[str, dict[str, Any]] = {}  # dedup key -> trigger event
        self.fail_next: list[int] = []  # statuses to answer next (429, 500, ...)
        super().__init__(self._handle)
        self.url = f"{self.base_url}/v2/enqueue"

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or path != "/v2/enqueue":
            return 404, {}, b""
        if self.fail_next:
            status = self.fail_next.pop(0)
            return status, {"Content-Type": "application/json"}, b'{"status": "throttle event", "message": "Requests for this service are arriving too quickly."}'
        try:
            event = json.loads(body)
        except ValueError:
            return self._invalid(["Body is not valid JSON"])
        errors = []
        if event.get("routing_key") not in self.routing_keys:
            errors.append("'routing_key' is invalid")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is missing or invalid")
        if action == "trigger":
            payload = event.get("payload") or {}
            for name in ("summary", "source", "severity"):
                if not payload.get(name):
                    errors.append(f"'payload.{name}' is missing or blank")
            if payload.get("severity") and payload["severity"] not in SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        elif not event.get("dedup_key"):
            errors.append("'dedup_key' is required for acknowledge and resolve events")
        if errors:
            return self._invalid(errors)
        key = event.get("dedup_key") or uuid.uuid4().hex
        self.events.append(event)
        if action == "trigger":
            self.open[key] = event
        elif action == "resolve":
            self.open.pop(key, None)
        return 202, {"Content-Type": "application/json"}, json.dumps(
            {"status": "success", "message": "Event processed", "dedup_key": key}).encode()

    def _invalid(self, errors: list[str]) -> tuple[int, dict[str, str], bytes]:
        return 400, {"Content-Type": "application/json"}, json.dumps(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors}).encode()
