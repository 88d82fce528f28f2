"""One incident per workload, on the Prefect side: join or open, the run's alert table, and the resolve rule.

- **Join or open.** An alert whose workload (its incident key, k8s_runbooks.alerts.incidents) has an open incident
  joins that incident's run if the run is still active (any state but COMPLETED, FAILED, CANCELLED, CRASHED and
  CANCELLING: a run being cancelled would drop the alert). Otherwise the incident is closed and the alert opens a
  new one with a run of its own.
- **The alert table.** Each incident's run carries one table artifact, key `incident-alerts`, with a row per alert
  that opened or joined it (alertname, source, status, startsAt, received/joined/resolved at, labels redacted). It
  is rewritten from the spool after every join and resolution rather than one artifact appended per join: the run
  page shows the whole incident in one place, a replay after a crash rewrites the same table instead of adding a
  duplicate, and a resolution updates its alert's row. An artifact create is noted in the spool before it is sent,
  so after a crash the dispatcher looks the table up (run + key) before creating another.
- **Resolve rule.** A resolved alert cancels its incident's run (and the runbook subflows it dispatched) while they
  wait (SCHEDULED, PENDING, PAUSED) only when every alert that opened or joined the incident is resolved, and no
  alert of the workload still waits to join it. Until then the run is kept and the log says which alerts still fire.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import httpx

from k8s_runbooks.alerts.incidents import ALERTS_ARTIFACT_KEY, alert_entry, describe
from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks.alerts.spool import Incident, Spool, SpoolRow
from k8s_runbooks_prefect.alerts.api import ApiUnavailable, api_call, detail, status_of

log = logging.getLogger("k8s_runbooks_prefect.alerts.dispatcher")

# States of a run that has not acted yet: not started, or paused for an approval.
WAITING_STATES = frozenset({"SCHEDULED", "PENDING", "PAUSED"})
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED", "CANCELLING"})
# A run's state read once serves the joins of one burst: within one dispatcher pass (new_pass() forgets it) and
# for at most a second of it. Never across passes: an alert that arrives after its incident's run ended (even 0.5 s
# after it was created, ended by hand) must see it ended and open a new run, not join the ended one.
STATE_TTL_S = 1.0
RECORD_BATCH, RECORD_BUDGET_S = 50, 0.25


class Incidents:
    def __init__(self, metrics: ReceiverMetrics) -> None:
        self.metrics = metrics
        self._states: dict[str, tuple[float, str | None]] = {}

    # --- join or open ---------------------------------------------------------------------------
    def run_state(self, client: Any, flow_run_id: str) -> str | None:
        """The run's state type (cached for a second), or None when the run no longer exists."""
        from prefect.exceptions import ObjectNotFound

        cached = self._states.get(flow_run_id)
        if cached is not None and time.monotonic() - cached[0] < STATE_TTL_S:
            return cached[1]
        try:
            with api_call():
                run = client.read_flow_run(uuid.UUID(flow_run_id))
            state = run.state.type.value if run.state is not None else "SCHEDULED"
        except ObjectNotFound:
            state = None
        self._states[flow_run_id] = (time.monotonic(), state)
        return state

    def new_pass(self) -> None:
        """A dispatcher pass starts: states read by earlier passes are not trusted any more."""
        self._states.clear()

    def created(self, flow_run_id: str) -> None:
        """A run just created is Scheduled: the alerts right behind its opener join without reading it back."""
        self._states[flow_run_id] = (time.monotonic(), "SCHEDULED")

    def join(self, client: Any, spool: Spool, row: SpoolRow) -> bool:
        """True when the alert joined its workload's active incident; False when it must open one (the incident's
        run ended: the incident is closed)."""
        incident = spool.open_incident(row.incident)
        if incident is None:
            return False
        state = self.run_state(client, incident.flow_run_id)
        now = time.time()
        if state is not None and state not in ENDED_STATES:
            if spool.mark_joined(row.id, incident, now):
                self.metrics.alerts_joined.labels(row.source).inc()
                log.info("alert %s (%s) joined incident %s: flow run %s (%s), not a run of its own",
                         row.dedup_key, row.alertname, row.incident, incident.flow_run_id, state)
            return True  # joined, or resolved meanwhile: no run either way
        reason = f"its run {incident.flow_run_id} " + (f"ended ({state})" if state else "no longer exists")
        spool.close_incident(incident.id, now, reason)
        log.info("incident %s closed: %s; alert %s opens a new one", row.incident, reason, row.dedup_key)
        return False

    # --- resolve rule ---------------------------------------------------------------------------
    def resolved(self, client: Any, spool: Spool, row: SpoolRow) -> None:
        """An alert resolved: cancel its incident's waiting runs once no alert of the incident fires any more."""
        if not row.flow_run_id:
            return
        incident = spool.get_incident(row.incident_id) if row.incident_id is not None else None
        if incident is not None:
            firing = spool.still_firing(incident)
            if firing:
                self.metrics.resolved_kept.inc()
                names = ", ".join(sorted({f"{r.alertname} ({r.fingerprint})" for r in firing}))
                log.info("alert %s resolved; incident %s keeps its run %s: %d alert(s) still firing: %s",
                         row.dedup_key, incident.incident_key, incident.flow_run_id, len(firing), names)
                return
            members = len(spool.members(incident.id))
            why = (f"all {members} alerts of incident {incident.incident_key} resolved" if members > 1
                   else f"alert {row.alertname or row.dedup_key} resolved")
        else:  # spooled before incidents existed: the alert alone
            why = f"alert {row.alertname or row.dedup_key} resolved"
        self.cancel_waiting(client, row.flow_run_id, why)

    def cancel_waiting(self, client: Any, flow_run_id: str, why: str) -> None:
        """The run (and the runbook subflows it dispatched) that has not started, or waits for an approval, is
        cancelled; nothing acts on a resolved incident. A running step finishes, and re-checks the evidence
        before any action it was approved for."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
        from prefect.states import Cancelled

        try:
            with api_call():
                root = client.read_flow_run(uuid.UUID(flow_run_id))
                children = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root.id])))
        except ApiUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the run may be gone (404): nothing to cancel
            log.warning("%s; its run %s could not be read: %s", why, flow_run_id, detail(exc))
            return
        waiting = [r for r in [*children, root] if r.state is not None and r.state.type.value in WAITING_STATES]
        for run in waiting:
            message = f"{why} while the run waited ({run.state.name}); nothing was changed"
            with api_call():
                client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
            self.metrics.runs_cancelled.inc()
            self._states.pop(str(run.id), None)
            log.info("%s: flow run %s (%s) cancelled", why, run.id, run.state.name)

    # --- the run's alert table ------------------------------------------------------------------
    def record(self, client: Any, spool: Spool, budget_s: float = RECORD_BUDGET_S) -> None:
        """Bring incidents' alert tables up to date with the spool (idempotent: each rewritten whole), for about
        `budget_s`: under an alert storm, creating the next runs matters more; the dispatcher comes back at once."""
        deadline = time.monotonic() + budget_s
        for incident in spool.unrecorded_incidents(RECORD_BATCH):
            self._record_one(client, spool, incident)
            if time.monotonic() > deadline:
                return

    def _record_one(self, client: Any, spool: Spool, incident: Incident) -> None:
        entries = [
            alert_entry(role="opened" if m.id == incident.opened_by else "joined", alertname=m.alertname,
                        source=m.source, fingerprint=m.fingerprint, starts_at=m.starts_at, labels=m.labels,
                        received_at=m.received_at, joined_at=m.joined_at, resolved_at=m.resolved_at)
            for m in spool.members(incident.id)
        ]
        body = {"data": json.dumps(entries), "description": describe(entries)}
        artifact_id = incident.artifact_id
        try:
            with api_call():
                if artifact_id is None and incident.artifact_tried:
                    artifact_id = self._find(client, incident.flow_run_id)
                if artifact_id is not None:
                    try:
                        client.request("PATCH", "/artifacts/{id}", path_params={"id": artifact_id}, json=body)
                    except httpx.HTTPStatusError as exc:
                        if status_of(exc) != 404:
                            raise
                        artifact_id = None  # deleted by someone: written anew
                if artifact_id is None:
                    spool.mark_artifact_tried(incident.id)
                    created = client.request("POST", "/artifacts/", json={
                        **body, "key": ALERTS_ARTIFACT_KEY, "type": "table", "flow_run_id": incident.flow_run_id})
                    artifact_id = str(created.json()["id"])
        except httpx.HTTPStatusError as exc:  # refused for good (the run was deleted...): never block the others
            log.error("incident %s: the alert table of run %s was not written: %s", incident.incident_key,
                      incident.flow_run_id, detail(exc))
        else:
            log.info("incident %s: alert table of run %s written (%d alerts)", incident.incident_key,
                     incident.flow_run_id, len(entries))
        spool.mark_recorded(incident.id, incident.version, artifact_id)

    @staticmethod
    def _find(client: Any, flow_run_id: str) -> str | None:
        """The run's alert table, if a create sent before a crash reached the server."""
        found = client.request("POST", "/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [ALERTS_ARTIFACT_KEY]}},
            "sort": "CREATED_DESC", "limit": 1}).json()
        return str(found[0]["id"]) if found else None
