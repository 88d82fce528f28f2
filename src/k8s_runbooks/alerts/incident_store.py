"""The spool's incidents: which run the alerts of one workload share, who joined it, what its table shows.

`incidents` has one row per run an alert opened; at most one is open per incident key (the workload, see
incidents.py). An alert that joins gets state `joined`, the incident's `flow_run_id` and `incident_id`, in one
transaction with the incident's version bump and a `joined` outbox event, so a join is either wholly in the spool
or not at all (then the alert is still pending and the dispatcher decides again). Every join and every resolution of
a member bumps `version`; the dispatcher rewrites the run's alert table until `recorded_version` catches up, which
makes recording idempotent across restarts (see k8s_runbooks_prefect.alerts.incidents).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from k8s_runbooks.alerts.spool_rows import Incident, SpoolRow


class IncidentStore:
    """Mixed into Spool: the same connection and lock."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def _tx(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    def open_incident(self, incident_key: str) -> Incident | None:
        """The open incident of this workload (its run not yet seen terminal), if any."""
        with self._lock:
            row = self._db.execute("SELECT * FROM incidents WHERE incident_key = ? AND closed_at IS NULL",
                                   (incident_key,)).fetchone()
        return Incident.from_sql(row) if row else None

    def get_incident(self, incident_id: int) -> Incident | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return Incident.from_sql(row) if row else None

    def incident_of_run(self, flow_run_id: str) -> Incident | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM incidents WHERE flow_run_id = ? ORDER BY id DESC LIMIT 1",
                                   (flow_run_id,)).fetchone()
        return Incident.from_sql(row) if row else None

    def close_incident(self, incident_id: int, now: float, reason: str) -> None:
        """Its run ended: the next alert of the workload opens a new incident."""
        with self._lock:
            self._db.execute("UPDATE incidents SET closed_at = ?, closed_reason = ? WHERE id = ? AND closed_at IS NULL",
                             (now, reason[:500], incident_id))

    @staticmethod
    def _open(db: sqlite3.Connection, row_id: int, incident_key: str, flow_run_id: str, now: float) -> int:
        # A stale open incident of the key cannot be joined any more (the dispatcher closes one whose run ended
        # before it opens another); closing it here keeps the one-open-per-key index true whatever happened.
        db.execute("UPDATE incidents SET closed_at = ?, closed_reason = 'superseded' WHERE incident_key = ? AND closed_at IS NULL",
                   (now, incident_key))
        incident_id = db.execute(
            "INSERT INTO incidents (incident_key, flow_run_id, opened_by, opened_at) VALUES (?,?,?,?) RETURNING id",
            (incident_key, flow_run_id, row_id, now)).fetchone()[0]
        db.execute("UPDATE alerts SET incident_id = ? WHERE id = ?", (incident_id, row_id))
        return incident_id

    def mark_joined(self, row_id: int, incident: Incident, now: float) -> bool:
        """The alert joins the incident's run instead of creating one; False if it resolved (or was handled) since
        it was read. One transaction: the row, the incident's version, the `joined` event."""
        def join(db: sqlite3.Connection) -> bool:
            done = db.execute(
                "UPDATE alerts SET state = 'joined', flow_run_id = ?, incident_id = ?, joined_at = ?, dispatched_at = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = 'pending' RETURNING id",
                (incident.flow_run_id, incident.id, now, now, row_id)).fetchone()
            if done is None:
                return False
            db.execute("UPDATE incidents SET version = version + 1 WHERE id = ?", (incident.id,))
            db.execute("INSERT OR IGNORE INTO outbox (alert_id, kind, created_at) VALUES (?, 'joined', ?)", (row_id, now))
            return True

        return bool(self._tx(join))

    def members(self, incident_id: int) -> list[SpoolRow]:
        """Every alert that opened or joined the incident, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM alerts WHERE incident_id = ? ORDER BY id", (incident_id,)).fetchall()
        return [SpoolRow.from_sql(r) for r in rows]

    def still_firing(self, incident: Incident) -> list[SpoolRow]:
        """Alerts of the incident not resolved: its members, and alerts of the workload still waiting to join."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM alerts WHERE resolved_at IS NULL AND (incident_id = ? OR (state = 'pending' AND incident_key = ?))"
                " ORDER BY id", (incident.id, incident.incident_key)).fetchall()
        return [SpoolRow.from_sql(r) for r in rows]

    def unrecorded_incidents(self, limit: int = 50) -> list[Incident]:
        """Incidents whose run's alert table is behind the spool."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM incidents WHERE recorded_version < version ORDER BY id LIMIT ?",
                                    (limit,)).fetchall()
        return [Incident.from_sql(r) for r in rows]

    def unrecorded_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM incidents WHERE recorded_version < version").fetchone()[0]

    def mark_artifact_tried(self, incident_id: int) -> None:
        """Written before the artifact is created: after a crash the dispatcher looks for it before creating another."""
        with self._lock:
            self._db.execute("UPDATE incidents SET artifact_tried = 1 WHERE id = ?", (incident_id,))

    def mark_recorded(self, incident_id: int, version: int, artifact_id: str | None) -> None:
        """The run's table shows `version` (a newer join or resolution keeps it behind: rewritten next pass)."""
        with self._lock:
            self._db.execute(
                "UPDATE incidents SET recorded_version = MAX(recorded_version, ?), artifact_id = COALESCE(?, artifact_id)"
                " WHERE id = ?", (version, artifact_id, incident_id))
