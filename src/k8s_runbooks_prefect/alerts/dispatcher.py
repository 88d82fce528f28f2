"""The dispatcher: a background thread that turns pending spool rows into Prefect flow runs and emits events.

Off the request path. It reads its own connection to the spool, so a restart replays whatever is still
pending. Every flow run is created with the row's idempotency key (source|fingerprint|startsAt): if the
receiver dies between "run created" and "row marked", the replay gets the same run back from Prefect instead of
a second one. While the Prefect API is unreachable or answers 5xx/429 (incl. SQLite "database is locked" 503s
the client already retried), the whole dispatcher backs off exponentially with jitter.

**One incident per workload** (incidents.py). Each routed alert carries its incident key: the workload its route
names (`namespace/deployment`, else `namespace/service`). The first alert of a workload opens the incident: its run
is created as above and, in the same spool transaction that records the run, the incident. A later alert of that
workload, whatever its alertname or fingerprint, **joins** the incident while the run is active (not COMPLETED,
FAILED, CANCELLED, CRASHED or CANCELLING): no run is created, the row becomes `joined` with the incident's run, and
the run's `incident-alerts` table artifact is rewritten to list it. Once the run has ended, the next alert of the
workload opens a new incident. A workload's pending alerts are taken oldest first, so the opener is always decided
before the alerts that may join it; a join is one spool transaction, and the table is rewritten from the spool
until it shows the spool's version, so a restart neither creates a second run nor loses or doubles a join.

**Resolve rule.** Nothing acts on a resolved alert: each row is re-checked right before its run is created, and if
the resolved notification is committed while the create call is in flight, the run is cancelled at once (it is
still Scheduled: runners need a second or more to pick a run up) and the row stays resolved, naming that run. An
incident's run (and the runbook subflows it dispatched) is cancelled while it waits (SCHEDULED, PENDING, PAUSED)
only when **every** alert that opened or joined it is resolved: a resolved crash alert does not cancel the run
while the latency alert of the same workload still fires.

The dispatcher also checkpoints the spool's WAL about once a second, so the request path never pays for it.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks.alerts.spool import OutboxItem, Spool, SpoolRow, Synchronous
from k8s_runbooks.redact import redact
from k8s_runbooks_prefect.alerts.api import ApiUnavailable as _ApiUnavailable
from k8s_runbooks_prefect.alerts.api import detail as _detail
from k8s_runbooks_prefect.alerts.api import status_of as _status_of
from k8s_runbooks_prefect.alerts.api import transient_status
from k8s_runbooks_prefect.alerts.incidents import Incidents

log = logging.getLogger("k8s_runbooks_prefect.alerts.dispatcher")

EVENT_PREFIX = "k8s-runbooks.alert"
CHECKPOINT_EVERY_S = 1.0
RESOLVED_DURING_CREATION = "resolved while its run was being created; the run was cancelled before it started"


class _Permanent(Exception):
    """Prefect refused this run for good (unknown deployment after the grace period, invalid parameters)."""


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter in [50%, 100%] of min(cap, base * 2^(attempt-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling * (0.5 + random.random() / 2)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: redact(v)[0] for k, v in value.items()}
    return redact(value)[0] if isinstance(value, str) else value


def event_for(item: OutboxItem) -> dict[str, Any]:
    """The Prefect event of one outbox item (alert received / joined / resolved), with the flow run as related resource."""
    row = item.alert
    name = {"resolved": "resolved", "joined": "joined"}.get(item.kind, "firing")
    related = []
    if row.flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{row.flow_run_id}", "prefect.resource.role": "flow-run"})
    resource = {
        "prefect.resource.id": f"{EVENT_PREFIX}.{row.source}.{row.fingerprint}",
        "prefect.resource.name": row.alertname or row.fingerprint,
        "k8s-runbooks.alert.source": row.source,
        "k8s-runbooks.alert.state": row.state,
    }
    for label in ("namespace", "deployment", "service", "severity"):
        if label in row.labels:
            resource[f"k8s-runbooks.alert.label.{label}"] = redact(row.labels[label])[0]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row.dedup_key}|{item.kind}")),
        "occurred": datetime.fromtimestamp(item.created_at, timezone.utc).isoformat(),
        "event": f"{EVENT_PREFIX}.{name}",
        "resource": resource,
        "related": related,
        "payload": {
            "source": row.source, "fingerprint": row.fingerprint, "starts_at": row.starts_at, "ends_at": row.ends_at,
            # Events are shown in Prefect's UI to everyone with access: alert text is untrusted and may quote
            # secrets (an annotation with a connection string, a rejected label value in `reason`).
            "labels": _redacted(row.labels), "annotations": _redacted(row.annotations), "url": _redacted(row.url),
            "disposition": row.state, "reason": _redacted(row.reason), "route": row.route, "deployment": row.deployment,
            "flow_run_id": row.flow_run_id, "repeats": row.repeats, "incident": _redacted(row.incident),
        },
    }


class Dispatcher:
    def __init__(
        self,
        spool_path: Path,
        metrics: ReceiverMetrics,
        *,
        synchronous: Synchronous = "NORMAL",
        request_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        missing_deployment_grace: float = 300.0,
        batch: int = 50,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.spool_path = spool_path
        self.metrics = metrics
        self.synchronous = synchronous
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.missing_deployment_grace = missing_deployment_grace
        self.batch = batch
        self._client_factory = client_factory or self._default_client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deployment_ids: dict[str, Any] = {}
        self.incidents = Incidents(metrics)
        self._api_failures = 0
        self._api_retry_at = 0.0
        self._checkpointed_at = 0.0
        self.last_error: str | None = None
        self.api_ok: bool | None = None

    def _default_client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True, httpx_settings={"timeout": self.request_timeout})

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # --- loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        spool = Spool(self.spool_path, self.synchronous)
        try:
            with self._client_factory() as client:
                while not self._stop.is_set():
                    self._wake.clear()
                    self._pass(client, spool)
                    self._checkpoint(spool)
                    self._wake.wait(min(CHECKPOINT_EVERY_S, self._sleep_for(spool)))
        except Exception:  # the thread must never die silently; /healthz reports alive=false
            log.exception("alert dispatcher stopped unexpectedly")
            raise
        finally:
            spool.close()

    def _checkpoint(self, spool: Spool) -> None:
        now = time.monotonic()
        if now - self._checkpointed_at < CHECKPOINT_EVERY_S:
            return
        self._checkpointed_at = now
        try:
            spool.checkpoint()
        except sqlite3.Error as exc:  # a busy checkpoint is retried next time; nothing is lost
            log.warning("spool checkpoint failed: %s", exc)

    def _sleep_for(self, spool: Spool) -> float:
        now = time.time()
        if self._api_retry_at > now:
            return self._api_retry_at - now
        nxt = spool.next_due_at()
        if spool.outbox_count() or spool.unrecorded_count():
            return 1.0 if self.api_ok is False else 0.05
        return 5.0 if nxt is None else min(5.0, max(0.0, nxt - now))

    def _pass(self, client: Any, spool: Spool) -> None:
        now = time.time()
        if now < self._api_retry_at:
            return
        self.incidents.new_pass()
        try:
            while not self._stop.is_set():
                rows = spool.due(time.time(), self.batch)
                if not rows:
                    break
                deferred: set[str] = set()  # incidents whose oldest alert waits for a retry: the others wait with it
                for row in rows:
                    if row.incident in deferred or not self._dispatch(client, spool, row):
                        deferred.add(row.incident)
                self._checkpoint(spool)
            self._emit_events(client, spool)
            self.incidents.record(client, spool)  # a bounded slice: new alerts are dispatched first
        except _ApiUnavailable as exc:
            self._api_failures += 1
            self.api_ok = False
            self.last_error = str(exc)
            delay = backoff_delay(self._api_failures, self.backoff_base, self.backoff_cap)
            self._api_retry_at = time.time() + delay
            log.warning("Prefect API unavailable (%s); retrying in %.1fs", exc, delay)
            return
        self._api_failures = 0
        self.api_ok = True

    def _dispatch(self, client: Any, spool: Spool, row: SpoolRow) -> bool:
        """Join the row's incident or open one with a run; False when the row waits for a retry (the later alerts
        of its incident must wait behind it)."""
        if not spool.is_pending(row.id):
            return True  # resolved since the batch was read: no run
        try:
            if self.incidents.join(client, spool, row):
                return True
            run_id = self._create_run(client, row)
        except _ApiUnavailable as exc:
            self.metrics.dispatch_failures.labels("transient").inc()
            spool.mark_retry(row.id, str(exc), time.time())  # due again as soon as the API is back
            raise
        except _Permanent as exc:
            self.metrics.dispatch_failures.labels("permanent").inc()
            spool.mark_failed(row.id, str(exc))
            log.error("alert %s (%s) not dispatched: %s", row.dedup_key, row.route, exc)
            return True
        except _MissingDeployment as exc:
            self.metrics.dispatch_failures.labels("transient").inc()
            if time.time() - row.received_at > self.missing_deployment_grace:
                self.metrics.dispatch_failures.labels("permanent").inc()
                spool.mark_failed(row.id, str(exc))
                log.error("alert %s not dispatched: %s", row.dedup_key, exc)
                return True
            spool.mark_retry(row.id, str(exc), time.time() + backoff_delay(row.attempts + 1, self.backoff_base, self.backoff_cap))
            return False
        now = time.time()
        if not spool.mark_dispatched(row.id, run_id, now):
            self._cancel_resolved(client, spool, row, run_id)
            return True
        self.incidents.created(run_id)
        self.metrics.runs_created.labels(row.deployment or "").inc()
        self.metrics.dispatch_latency.observe(max(0.0, now - row.received_at))
        log.info("alert %s -> flow run %s of %s (opens incident %s)", row.dedup_key, run_id, row.deployment, row.incident)
        return True

    def _cancel_resolved(self, client: Any, spool: Spool, row: SpoolRow, run_id: str) -> None:
        from prefect.states import Cancelled

        reason = RESOLVED_DURING_CREATION
        try:
            client.set_flow_run_state(uuid.UUID(run_id), Cancelled(message=f"alert {row.dedup_key} resolved"), force=True)
            self.metrics.runs_cancelled.inc()
            log.info("alert %s resolved while flow run %s was created: run cancelled", row.dedup_key, run_id)
        except Exception as exc:  # noqa: BLE001 - recorded on the row and logged; the run may still start
            reason = f"resolved while its run was being created; cancelling run {run_id} failed: {_detail(exc)}"
            log.error("alert %s: %s", row.dedup_key, reason)
        spool.mark_cancelled_run(row.id, run_id, reason)

    def _create_run(self, client: Any, row: SpoolRow) -> str:
        from prefect.exceptions import ObjectNotFound

        name = row.deployment or ""
        try:
            dep_id = self._deployment_ids.get(name)
            if dep_id is None:
                dep_id = client.read_deployment_by_name(name).id
                self._deployment_ids[name] = dep_id
            tags = ["k8s-runbooks", "alert", f"alert-source:{row.source}", f"alert-route:{row.route}", *row.tags]
            severity = row.labels.get("severity", "")
            if severity.isascii() and severity.isalnum() and len(severity) <= 20:  # a page's severity (flows/chatops.py)
                tags.append(f"alert-severity:{severity.lower()}")
            run = client.create_flow_run_from_deployment(
                dep_id, parameters=row.parameters or {}, idempotency_key=row.idempotency_key, tags=tags,
            )
            return str(run.id)
        except ObjectNotFound:
            self._deployment_ids.pop(name, None)
            raise _MissingDeployment(
                f"deployment {name!r} does not exist on the Prefect server (route {row.route}); register it "
                "(prefect deploy / `sandbox up`) or fix deployments/alert-routes.yaml"
            ) from None
        except (httpx.TransportError, OSError, TimeoutError) as exc:
            raise _ApiUnavailable(_detail(exc)) from None
        except httpx.HTTPStatusError as exc:
            status = _status_of(exc) or 0
            if transient_status(status):
                raise _ApiUnavailable(_detail(exc)) from None
            if status == 404:
                self._deployment_ids.pop(name, None)
                raise _MissingDeployment(f"deployment {name!r} was not found ({_detail(exc)})") from None
            raise _Permanent(f"Prefect refused the flow run of {name!r}: {_detail(exc)}") from None

    def _emit_events(self, client: Any, spool: Spool) -> None:
        while not self._stop.is_set():
            items = spool.outbox(200)
            if not items:
                return
            for item in items:
                if item.kind == "resolved":
                    self.incidents.resolved(client, spool, item.alert)
            try:
                client.request("POST", "/events", json=[event_for(i) for i in items])
            except (httpx.TransportError, OSError, TimeoutError) as exc:
                raise _ApiUnavailable(_detail(exc)) from None
            except httpx.HTTPStatusError as exc:
                if transient_status(_status_of(exc) or 0):
                    raise _ApiUnavailable(_detail(exc)) from None
                # A malformed event would block the outbox forever: log it and drop it.
                log.error("Prefect rejected %d alert events (%s); dropping them", len(items), _detail(exc))
            else:
                self.metrics.events_emitted.inc(len(items))
            spool.delete_outbox([i.id for i in items])


class _MissingDeployment(Exception):
    """The route's deployment is not registered (yet): retried for a grace period, then the row fails."""
