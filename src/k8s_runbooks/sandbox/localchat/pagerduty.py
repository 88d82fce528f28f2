"""The PagerDuty Events API v2: `POST /v2/enqueue` answers 202 `{"status": "success", "message": "Event processed",
"dedup_key": ...}`; an invalid event 400 `{"status": "invalid event", "message": "Event object is invalid",
"errors": [...]}`. Alerts are kept per dedup key (triggered, acknowledged, resolved), as PagerDuty does; a routing
key belongs to a service (`routing_keys`: key -> service name), and only the service name is ever shown or stored.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

Answer = tuple[int, dict[str, str], bytes]
SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = ("trigger", "acknowledge", "resolve")


class PagerDutyEvents:
    def __init__(self, routing_keys: set[str] | dict[str, str]) -> None:
        self.routing_keys: dict[str, str] = (dict(routing_keys) if isinstance(routing_keys, dict)
                                             else {k: f"service-{i + 1}" for i, k in enumerate(sorted(routing_keys))})
        self.events: list[dict[str, Any]] = []  # as received (with the routing key): for tests in this process
        self.open: dict[str, dict[str, Any]] = {}  # dedup key -> its trigger event, while not resolved
        self.incidents: dict[str, dict[str, Any]] = {}  # dedup key -> what a person sees (no routing key)
        self.fail_next: list[int] = []  # statuses to answer next (429, 500, ...)
        self.on_change: Callable[[], None] | None = None
        self._pd_lock = threading.RLock()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if method != "POST" or path.split("?", 1)[0] != "/v2/enqueue":
            return 404, {"Content-Type": "application/json"}, b'{"status": "not found"}'
        with self._pd_lock:
            if self.fail_next:
                status = self.fail_next.pop(0)
                return status, {"Content-Type": "application/json"}, \
                    b'{"status": "throttle event", "message": "Requests for this service are arriving too quickly."}'
        try:
            event = json.loads(body)
        except ValueError:
            return self._invalid(["Body is not valid JSON"])
        if not isinstance(event, dict):
            return self._invalid(["Event object is not a JSON object"])
        errors = self._errors(event)
        if errors:
            return self._invalid(errors)
        key = str(event.get("dedup_key") or uuid.uuid4().hex)
        with self._pd_lock:
            self.events.append(event)
            self._apply(key, event)
            if self.on_change is not None:
                self.on_change()
        return 202, {"Content-Type": "application/json"}, json.dumps(
            {"status": "success", "message": "Event processed", "dedup_key": key}).encode()

    def _errors(self, event: dict[str, Any]) -> list[str]:
        errors = []
        if event.get("routing_key") not in self.routing_keys:
            errors.append("'routing_key' is invalid")
        action = event.get("event_action")
        if action not in ACTIONS:
            errors.append("'event_action' is missing or invalid")
        if action == "trigger":
            payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
            for name in ("summary", "source", "severity"):
                if not payload.get(name):
                    errors.append(f"'payload.{name}' is missing or blank")
            if payload.get("severity") and payload["severity"] not in SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        elif action in ACTIONS and not event.get("dedup_key"):
            errors.append("'dedup_key' is required for acknowledge and resolve events")
        return errors

    def _apply(self, key: str, event: dict[str, Any]) -> None:
        action, now = event["event_action"], time.time()
        service = self.routing_keys[event["routing_key"]]
        seen = self.incidents.get(key)
        if action == "trigger":
            self.open[key] = event
            payload = event["payload"]
            if seen is None or seen["status"] == "resolved":  # a new alert (PagerDuty reopens nothing resolved)
                seen = self.incidents[key] = {"dedup_key": key, "service": service, "triggered_at": now, "events": []}
            seen.update(status="triggered", summary=payload["summary"], source=payload["source"],
                        severity=payload["severity"], resolved_at=None,
                        links=[link.get("href") for link in event.get("links") or [] if isinstance(link, dict)])
        elif action == "resolve":
            self.open.pop(key, None)
            if seen is not None:  # resolving an unknown key: accepted and dropped, as PagerDuty does
                seen.update(status="resolved", resolved_at=now)
        elif seen is not None and seen["status"] == "triggered":
            seen["status"] = "acknowledged"
        if seen is not None:
            seen["events"].append({"action": action, "at": now, "service": service})

    @staticmethod
    def _invalid(errors: list[str]) -> Answer:
        return 400, {"Content-Type": "application/json"}, json.dumps(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors}).encode()

    # ------------------------------------------------------------------ state on disk
    def to_dict(self) -> dict[str, Any]:
        with self._pd_lock:
            return {"incidents": list(self.incidents.values())}

    def load_dict(self, data: dict[str, Any]) -> None:
        with self._pd_lock:
            self.incidents = {i["dedup_key"]: i for i in data.get("incidents", [])}
