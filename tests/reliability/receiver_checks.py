"""The receiver's contract for any request, checked after every fuzz case.

- never a 5xx;
- every 4xx is JSON `{"error": <non-empty text>, "detail": ...}`;
- a rejected (4xx) or ignored (202) request leaves the spool exactly as it was (no row, no repeat bump,
  no outbox event): nothing half-stored;
- an accepted (200) request stored every alert whole: each alert of the notification has its row, with the
  labels and annotations it was sent with when the row is new, a route and parameters the runbook's own
  parameter model accepts when queued, a reason when ignored or rejected.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
from pydantic import BaseModel

from flows.params import HighLatencyParams, IncidentParams, PodCrashParams
from k8s_runbooks.alerts.payloads import AlertmanagerPayload, GrafanaPayload, SentryIssueAlertPayload
from k8s_runbooks.alerts.spool import Spool

PARAM_MODELS: dict[str, type[BaseModel]] = {
    "pod-crash/pod-crash": PodCrashParams,
    "high-latency/high-latency": HighLatencyParams,
    "incident-response/incident-response": IncidentParams,
}
MODELS: dict[str, type[BaseModel]] = {
    "/v1/alerts/alertmanager": AlertmanagerPayload,
    "/v1/alerts/grafana": GrafanaPayload,
    "/v1/alerts/sentry": SentryIssueAlertPayload,
}
NEW_ROW_STATE = {"queued": "pending", "ignored": "ignored", "rejected": "rejected"}


def snapshot(spool: Spool) -> tuple[Any, ...]:
    """Everything a request could change in the spool, cheaply (a second connection; WAL readers don't block)."""
    db = sqlite3.connect(f"file:{spool.path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT COUNT(*), TOTAL(repeats), COUNT(resolved_at), MAX(last_seen_at), MAX(id),"
            " (SELECT COUNT(*) FROM outbox), (SELECT MAX(id) FROM outbox) FROM alerts"
        ).fetchone()
    finally:
        db.close()


def check_error_body(resp: httpx.Response) -> None:
    assert resp.headers.get("content-type", "").startswith("application/json"), (resp.status_code, resp.text[:300])
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"].strip(), body


def check(resp: httpx.Response, spool: Spool, before: tuple[Any, ...], path: str, body: bytes) -> str:
    """Assert the contract for one request; returns a short outcome label for statistics."""
    assert resp.status_code < 500, f"{resp.status_code} for {path}: {resp.text[:500]}"
    after = snapshot(spool)
    if resp.status_code != 200 or path not in MODELS:
        assert after == before, f"{resp.status_code} for {path} changed the spool: {before} -> {after}"
        if resp.status_code >= 400:
            check_error_body(resp)
        return str(resp.status_code)
    result = resp.json()
    alerts = MODELS[path].model_validate_json(body).normalise()  # type: ignore[attr-defined]
    assert result["accepted"] == len(alerts) == len(result["alerts"]), result
    assert after[0] - before[0] <= len(alerts)
    for i, (alert, entry) in enumerate(zip(alerts, result["alerts"])):
        resolved_later = any(a.dedup_key == alert.dedup_key and a.status == "resolved" for a in alerts[i + 1:])
        assert entry["fingerprint"] == alert.fingerprint and entry["status"] == alert.status
        row = spool.get(alert.dedup_key)
        assert row is not None, f"accepted alert {alert.dedup_key!r} has no spool row"
        outcome = entry["outcome"]
        if outcome in NEW_ROW_STATE:
            assert row.state == NEW_ROW_STATE[outcome] or (resolved_later and row.state == "resolved"), row
            assert row.source == alert.source
            assert row.labels == alert.labels and row.annotations == alert.annotations
        if outcome == "queued":
            assert row.route and entry.get("route") == row.route
            assert row.deployment in PARAM_MODELS and row.parameters is not None, row
            # What the dispatcher will submit must be what the runbook accepts: no label value reaches a
            # query without passing the runbook's own validation.
            PARAM_MODELS[row.deployment].model_validate(row.parameters["params"])
        elif outcome in ("ignored", "rejected"):
            assert row.reason and (outcome == "ignored" or row.parameters is None), row
        elif outcome in ("resolved", "resolved-duplicate"):
            assert row.resolved_at is not None and row.state != "pending", row
        else:
            assert outcome == "duplicate", entry
    return "200"


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
