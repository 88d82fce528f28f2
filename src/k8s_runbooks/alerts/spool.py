"""The durable spool: every accepted alert is a row in SQLite (WAL) before the sender gets its 2xx.

One row per incident, keyed by source|fingerprint|startsAt (UNIQUE): repeats of a firing alert only bump
`repeats`, a resolved notification stamps `resolved_at` on the same row. Row states:

  pending     firing and routed; the dispatcher still has to create the flow run or join the incident's
  dispatched  the flow run exists (flow_run_id): this alert opened the incident of its workload (incident_id)
  joined      the workload's incident run was still active: the alert joined it (flow_run_id, incident_id, joined_at)
  ignored     no route matched (reason)
  rejected    a route matched but a label value is unsafe or missing (reason); never dispatched
  failed      Prefect refused the run permanently (unknown deployment, invalid parameters) (reason)
  resolved    only a resolved notification was seen, or it resolved before its run was created
              (no run is ever started from it: nothing acts on a resolved alert)

`outbox` holds the Prefect events still to emit (alert received / joined / resolved), so they survive restarts too.
`incidents` holds the runs alerts share, one open per workload (incident_store.py). Every routed alert is stored
with its incident key (`incident_key`, the workload its route names), and the dispatcher takes a workload's pending
alerts oldest first: the alert that opens an incident is always decided before the ones that may join it.

Durability: WAL with synchronous=NORMAL. A commit is in the WAL file (the OS page cache) before `commit()`
returns, so a killed receiver (SIGKILL, OOM, crash) loses nothing it acknowledged; only an OS crash or power
loss may roll back the last commits. FULL would fsync every notification (milliseconds each on shared disks,
against a 20 ms p99 ack budget), and senders re-notify firing alerts anyway (Alertmanager repeat_interval),
so NORMAL is the default; `K8S_RUNBOOKS_RECEIVER_SPOOL_SYNCHRONOUS=FULL` trades latency for power-loss safety.

Group commit: `record_many` stores the notifications of several concurrent requests in one transaction (one
SAVEPOINT each, so a request that fails rolls back alone); the app acknowledges each request only after that
COMMIT returned, so the guarantee above holds per request, with one WAL append (and under FULL one fsync) per
group instead of per request. Checkpoints (copying the WAL into the database file, with an fsync) are taken
by the dispatcher thread (`checkpoint`), not on the request path; the request connection only checkpoints by
itself as a backstop when the WAL passes `BACKSTOP_CHECKPOINT_PAGES`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from k8s_runbooks.alerts.incident_store import IncidentStore
from k8s_runbooks.alerts.payloads import Alert
from k8s_runbooks.alerts.routing import Decision
from k8s_runbooks.alerts.spool_rows import Incident, OutboxItem, SpoolRow, create_or_migrate
from k8s_runbooks.errors import ConfigError

__all__ = ["Incident", "Items", "OutboxItem", "Outcome", "Spool", "SpoolRow", "Synchronous", "idempotency_key"]
RESOLVED_BEFORE_DISPATCH = "resolved before its run was created; no remediation started"

Outcome = Literal["queued", "duplicate", "ignored", "rejected", "resolved", "resolved-duplicate"]
Synchronous = Literal["NORMAL", "FULL"]
# Per alert: its routing decision, None for resolved alerts, or a function that decides (called only when the
# alert is new: a repeat of a stored alert needs no routing).
Items = Iterable[tuple[Alert, "Decision | Callable[[], Decision] | None"]]
BACKSTOP_CHECKPOINT_PAGES = 10_000  # ~40 MB of WAL: only reached if the dispatcher stopped checkpointing

def idempotency_key(alert: Alert) -> str:
    return f"k8s-runbooks-alert:{alert.dedup_key}"


class Spool(IncidentStore):
    """One connection to the spool file. Not thread-safe by design: each thread opens its own Spool."""

    def __init__(self, path: Path, synchronous: Synchronous = "NORMAL", *, autocheckpoint: bool = True) -> None:
        """`autocheckpoint=False`: someone else calls `checkpoint()` (the dispatcher); this connection then
        checkpoints only as a backstop, so its commits (the request path) rarely pay for one."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigError(f"the alert spool {path} cannot use WAL mode (got {mode}); put it on a local disk")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA busy_timeout=30000")
            if not autocheckpoint:
                self._db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            create_or_migrate(self._db)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the alert spool {path}: {exc}",
                              hint="set K8S_RUNBOOKS_RECEIVER_SPOOL or pass --spool to a writable path") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # --- request path -------------------------------------------------------------------------
    def record(self, items: Items, now: float) -> list[tuple[Outcome, int]]:
        """Store one notification's alerts in one transaction; (outcome, row id) per alert, in order.

        `decision` is None for resolved alerts (they are never routed to a run).
        """
        out: list[tuple[Outcome, int]] = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for alert, decision in items:
                    out.append(self._record_one(db, alert, decision, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def record_many(self, requests: list[tuple[Items, float]]) -> list[list[tuple[Outcome, int]] | Exception]:
        """Group commit: several notifications (each `(items, now)`) in one transaction.

        Each notification is all-or-nothing on its own: if one raises (say, a value that cannot be stored),
        the group is rolled back and stored again with a SAVEPOINT per notification, so only that one fails
        (its exception is returned in its place). A failing BEGIN/COMMIT (sqlite3.Error) raises: then nothing
        of the group is stored.
        """
        requests = [(list(items), now) for items, now in requests]  # iterated twice if the fast try fails
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                try:
                    out: list[list[tuple[Outcome, int]] | Exception] = [
                        [self._record_one(db, alert, decision, now) for alert, decision in items]
                        for items, now in requests
                    ]
                except sqlite3.Error:
                    raise
                except Exception:  # noqa: BLE001 - one bad notification: redo the group one savepoint each
                    db.execute("ROLLBACK")
                    db.execute("BEGIN IMMEDIATE")
                    out = [self._record_isolated(db, items, now) for items, now in requests]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return out

    def _record_isolated(self, db: sqlite3.Connection, items: list[Any], now: float) -> list[tuple[Outcome, int]] | Exception:
        db.execute("SAVEPOINT notification")
        try:
            result: list[tuple[Outcome, int]] | Exception = [self._record_one(db, a, d, now) for a, d in items]
        except sqlite3.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - returned to that request's caller
            db.execute("ROLLBACK TO notification")
            result = exc
        db.execute("RELEASE notification")
        return result

    def _record_one(self, db: sqlite3.Connection, alert: Alert, decide: Decision | Callable[[], Decision] | None,
                    now: float) -> tuple[Outcome, int]:
        key = alert.dedup_key
        if alert.status == "firing":
            # Most notifications repeat an alert already stored: one UPDATE, no routing, no INSERT attempt.
            row = db.execute(
                "UPDATE alerts SET repeats = repeats + 1, last_seen_at = ? WHERE dedup_key = ? RETURNING id", (now, key)
            ).fetchone()
            if row is not None:
                return "duplicate", row[0]
        decision = decide() if callable(decide) else decide
        if alert.status == "resolved":
            row = db.execute(
                # Nothing acts on a resolved alert: a row still waiting for its run is closed instead.
                "UPDATE alerts SET resolved_at = ?, ends_at = ?, last_seen_at = ?,"
                " reason = CASE WHEN state = 'pending' THEN ? ELSE reason END,"
                " state = CASE WHEN state = 'pending' THEN 'resolved' ELSE state END"
                " WHERE dedup_key = ? AND resolved_at IS NULL "
                "RETURNING id, incident_id", (now, alert.ends_at, now, RESOLVED_BEFORE_DISPATCH, key),
            ).fetchone()
            if row is not None:
                if row[1] is not None:  # its incident's alert table shows it resolved
                    db.execute("UPDATE incidents SET version = version + 1 WHERE id = ?", (row[1],))
                self._outbox(db, row[0], "resolved", now)
                return "resolved", row[0]
            state, reason = "resolved", "resolved notification without a recorded firing one; no run is started"
            decision = None
        elif decision is None or decision.outcome == "ignored":
            state, reason = "ignored", decision.reason if decision else "not routed"
        elif decision.outcome == "rejected":
            state, reason = "rejected", decision.reason
        else:
            state, reason = "pending", None
        cur = db.execute(
            "INSERT INTO alerts (dedup_key, source, fingerprint, starts_at, alertname, labels, annotations, url, state,"
            " reason, route, deployment, parameters, tags, idempotency_key, received_at, last_seen_at, resolved_at, ends_at,"
            " incident_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(dedup_key) DO NOTHING RETURNING id",
            (
                key, alert.source, alert.fingerprint, alert.starts_at, alert.alertname,
                json.dumps(alert.labels, separators=(",", ":")), json.dumps(alert.annotations, separators=(",", ":")),
                alert.url, state, reason,
                decision.route if decision else None, decision.deployment if decision else None,
                json.dumps(decision.parameters) if decision and decision.parameters is not None else None,
                json.dumps(list(decision.tags)) if decision else None,
                idempotency_key(alert), now, now,
                now if state == "resolved" else None, alert.ends_at,
                (decision.incident or f"alert:{key}") if state == "pending" and decision else None,
            ),
        ).fetchone()
        if cur is not None:
            self._outbox(db, cur[0], state if state == "resolved" else "received", now)
            return ("queued" if state == "pending" else state), cur[0]  # type: ignore[return-value]
        row = db.execute(
            "UPDATE alerts SET repeats = repeats + 1, last_seen_at = ? WHERE dedup_key = ? RETURNING id", (now, key)
        ).fetchone()
        return ("resolved-duplicate" if alert.status == "resolved" else "duplicate"), row[0]

    @staticmethod
    def _outbox(db: sqlite3.Connection, alert_id: int, kind: str, now: float) -> None:
        db.execute("INSERT OR IGNORE INTO outbox (alert_id, kind, created_at) VALUES (?,?,?)", (alert_id, kind, now))

    # --- dispatcher ---------------------------------------------------------------------------
    def due(self, now: float, limit: int = 50) -> list[SpoolRow]:
        """Pending alerts to dispatch now, oldest first. An alert waits while an older pending alert of its incident
        waits for a retry: that one may have created the incident's run already (a lost response), and the
        idempotency key gives it back only to that alert."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM alerts a WHERE state = 'pending' AND next_attempt_at <= ?1 AND NOT EXISTS ("
                " SELECT 1 FROM alerts o WHERE o.state = 'pending' AND o.incident_key = a.incident_key AND o.id < a.id"
                " AND o.next_attempt_at > ?1) ORDER BY id LIMIT ?2",
                (now, limit),
            ).fetchall()
        return [SpoolRow.from_sql(r) for r in rows]

    def next_due_at(self) -> float | None:
        """When the next pending alert falls due (the oldest pending alert of each incident decides for the rest)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM alerts a WHERE state = 'pending' AND NOT EXISTS ("
                " SELECT 1 FROM alerts o WHERE o.state = 'pending' AND o.incident_key = a.incident_key AND o.id < a.id)"
            ).fetchone()
        return row[0]

    def is_pending(self, row_id: int) -> bool:
        """Still waiting for its run (not resolved meanwhile): checked right before the run is created."""
        with self._lock:
            row = self._db.execute("SELECT state FROM alerts WHERE id = ?", (row_id,)).fetchone()
        return row is not None and row[0] == "pending"

    def mark_dispatched(self, row_id: int, flow_run_id: str, now: float) -> bool:
        """Record the run and open the alert's incident on it (one transaction); False (and the row keeps its state)
        if the alert resolved while the run was created."""
        def dispatched(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "UPDATE alerts SET state = 'dispatched', flow_run_id = ?, dispatched_at = ?, attempts = attempts + 1,"
                " last_error = NULL WHERE id = ? AND state = 'pending' RETURNING incident_key, dedup_key",
                (flow_run_id, now, row_id),
            ).fetchone()
            if row is None:
                return False
            self._open(db, row_id, row[0] or f"alert:{row[1]}", flow_run_id, now)
            return True

        return bool(self._tx(dispatched))

    def mark_cancelled_run(self, row_id: int, flow_run_id: str, reason: str) -> None:
        """A run created for an alert that resolved meanwhile: the row stays resolved, the run is named."""
        self._exec("UPDATE alerts SET flow_run_id = ?, reason = ?, attempts = attempts + 1 WHERE id = ?",
                   (flow_run_id, reason[:2000], row_id))

    def checkpoint(self) -> tuple[int, int]:
        """Copy committed WAL frames into the database file without blocking writers (PASSIVE);
        (frames in the WAL, frames checkpointed)."""
        with self._lock:
            _busy, log_frames, done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return log_frames, done

    def mark_retry(self, row_id: int, error: str, next_attempt_at: float) -> None:
        self._exec("UPDATE alerts SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                   (error[:2000], next_attempt_at, row_id))

    def mark_failed(self, row_id: int, reason: str) -> None:
        self._exec("UPDATE alerts SET state = 'failed', attempts = attempts + 1, reason = ?, last_error = ? WHERE id = ?",
                   (reason[:2000], reason[:2000], row_id))

    def outbox(self, limit: int = 200) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT o.id AS o_id, o.kind AS o_kind, o.created_at AS o_created_at, a.* FROM outbox o"
                " JOIN alerts a ON a.id = o.alert_id ORDER BY o.id LIMIT ?", (limit,),
            ).fetchall()
        items = []
        for r in rows:
            data = {k: r[k] for k in r.keys() if not k.startswith("o_")}
            items.append(OutboxItem(r["o_id"], r["o_kind"], r["o_created_at"], SpoolRow.from_sql(data)))  # type: ignore[arg-type]
        return items

    def delete_outbox(self, ids: list[int]) -> None:
        if ids:
            self._exec(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))

    # --- inspection ---------------------------------------------------------------------------
    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM alerts WHERE state = 'pending'").fetchone()[0]

    def outbox_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def get(self, dedup_key: str) -> SpoolRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM alerts WHERE dedup_key = ?", (dedup_key,)).fetchone()
        return SpoolRow.from_sql(row) if row else None

    def rows(self) -> list[SpoolRow]:
        with self._lock:
            return [SpoolRow.from_sql(r) for r in self._db.execute("SELECT * FROM alerts ORDER BY id").fetchall()]

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)
