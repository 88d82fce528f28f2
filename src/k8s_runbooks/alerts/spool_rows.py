"""The spool's schema, its migration from older files, and the rows read back from it (see spool.py)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id              INTEGER PRIMARY KEY,
    dedup_key       TEXT NOT NULL UNIQUE,
    source          TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    starts_at       TEXT NOT NULL,
    alertname       TEXT NOT NULL,
    labels          TEXT NOT NULL,
    annotations     TEXT NOT NULL,
    url             TEXT,
    state           TEXT NOT NULL,
    reason          TEXT,
    route           TEXT,
    deployment      TEXT,
    parameters      TEXT,
    tags            TEXT,
    idempotency_key TEXT NOT NULL,
    flow_run_id     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    received_at     REAL NOT NULL,
    last_seen_at    REAL NOT NULL,
    repeats         INTEGER NOT NULL DEFAULT 0,
    resolved_at     REAL,
    ends_at         TEXT,
    dispatched_at   REAL,
    incident_key    TEXT,
    incident_id     INTEGER,
    joined_at       REAL
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts(next_attempt_at) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY,
    alert_id   INTEGER NOT NULL REFERENCES alerts(id),
    kind       TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (alert_id, kind)
);
CREATE TABLE IF NOT EXISTS incidents (
    id               INTEGER PRIMARY KEY,
    incident_key     TEXT NOT NULL,
    flow_run_id      TEXT NOT NULL,
    opened_by        INTEGER NOT NULL REFERENCES alerts(id),
    opened_at        REAL NOT NULL,
    closed_at        REAL,
    closed_reason    TEXT,
    version          INTEGER NOT NULL DEFAULT 1,
    recorded_version INTEGER NOT NULL DEFAULT 0,
    artifact_id      TEXT,
    artifact_tried   INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open ON incidents(incident_key) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_unrecorded ON incidents(id) WHERE recorded_version < version;
"""
# Added after the first release: a spool file from before gets them on open (ALTER TABLE ... ADD COLUMN).
_ADDED_COLUMNS = (("incident_key", "TEXT"), ("incident_id", "INTEGER"), ("joined_at", "REAL"))
_INDEXES = """
CREATE INDEX IF NOT EXISTS alerts_pending_incident ON alerts(incident_key, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts(incident_id) WHERE incident_id IS NOT NULL;
"""


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Create the tables, or bring a spool written by an older receiver up to date (its rows are kept: a pending
    alert from before the upgrade is dispatched as an incident of its own)."""
    db.executescript(SCHEMA)
    have = {r[1] for r in db.execute("PRAGMA table_info(alerts)").fetchall()}
    for name, kind in _ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind}")
    db.executescript(_INDEXES)


@dataclass(frozen=True, slots=True)
class SpoolRow:
    id: int
    dedup_key: str
    source: str
    fingerprint: str
    starts_at: str
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    url: str | None
    state: str
    reason: str | None
    route: str | None
    deployment: str | None
    parameters: dict[str, Any] | None
    tags: list[str]
    idempotency_key: str
    flow_run_id: str | None
    attempts: int
    next_attempt_at: float
    last_error: str | None
    received_at: float
    last_seen_at: float
    repeats: int
    resolved_at: float | None
    ends_at: str | None
    dispatched_at: float | None
    incident_key: str | None = None
    incident_id: int | None = None
    joined_at: float | None = None

    @classmethod
    def from_sql(cls, row: sqlite3.Row | dict[str, Any]) -> SpoolRow:
        data = dict(row)
        for key in ("labels", "annotations"):
            data[key] = json.loads(data[key])
        data["parameters"] = json.loads(data["parameters"]) if data["parameters"] else None
        data["tags"] = json.loads(data["tags"]) if data["tags"] else []
        return cls(**data)

    @property
    def incident(self) -> str:
        """The incident this alert belongs to (rows spooled before incidents existed: the alert alone)."""
        return self.incident_key or f"alert:{self.dedup_key}"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str
    created_at: float
    alert: SpoolRow


@dataclass(frozen=True, slots=True)
class Incident:
    """The run alerts of one workload share. Open until the dispatcher sees its run in a terminal state."""

    id: int
    incident_key: str
    flow_run_id: str
    opened_by: int
    opened_at: float
    closed_at: float | None
    closed_reason: str | None
    version: int  # bumped by every join and every resolution of a member
    recorded_version: int  # the version the run's alert table shows
    artifact_id: str | None
    artifact_tried: int  # 1 once an artifact create was sent: it may exist even if its id never came back

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> Incident:
        return cls(**dict(row))
