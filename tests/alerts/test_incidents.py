"""The incident key (pure: which alerts are one incident) and the spool's incident bookkeeping (no Prefect)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from k8s_runbooks.alerts.incidents import alert_entry, incident_key, workload_key
from k8s_runbooks.alerts.payloads import Alert, AlertmanagerPayload
from k8s_runbooks.alerts.routing import Router, load_routes
from k8s_runbooks.alerts.spool import Spool
from tests.alerts.conftest import REPO, payload_bytes


@pytest.mark.parametrize(("parameters", "key"), [
    ({"params": {"namespace": "shop", "deployment": "checkout", "approval": "auto"}}, "shop/checkout"),
    ({"params": {"namespace": "shop", "service": "checkout"}}, "shop/checkout"),  # a Service's Deployment: same name
    ({"params": {"namespace": "shop", "service": "web", "deployment": "checkout"}}, "shop/checkout"),  # the workload
    ({"params": {"namespace": "shop", "service": "web", "deployment": ""}}, "shop/web"),  # runbooks' default
    ({"namespace": "shop", "deployment": "checkout"}, "shop/checkout"),  # flat parameters
    ({"params": {"namespace": "shop", "deployment": "checkout", "kube_context": "gke-eu"}}, "gke-eu:shop/checkout"),
    ({"namespace": "top", "deployment": "a", "params": {"namespace": "shop", "deployment": "b"}}, "top/a"),  # top first
    ({"params": {"deployment": "checkout"}}, None),  # no namespace: no workload
    ({"params": {"namespace": "shop"}}, None),
    ({"params": {"namespace": "shop", "deployment": 3}}, None),  # not a name
    ({"a": {"b": {"namespace": "shop", "deployment": "deep"}}}, None),  # only one level down is searched
    ({}, None), (None, None),
])
def test_workload_key(parameters: dict | None, key: str | None) -> None:
    assert workload_key(parameters) == key


def test_without_a_workload_the_alert_is_its_own_incident() -> None:
    assert incident_key({"params": {"deployment": "x"}}, "alertmanager|fp|t") == "alert:alertmanager|fp|t"
    assert incident_key({"params": {"namespace": "shop", "deployment": "x"}}, "alertmanager|fp|t") == "shop/x"


def _alerts() -> list[Alert]:
    return AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()


def test_routes_give_one_key_per_workload_whatever_the_alertname() -> None:
    crash, latency, _watchdog = _alerts()
    latency = dataclasses.replace(latency, labels={**latency.labels, "service": "checkout"})
    other_container = dataclasses.replace(crash, fingerprint="ffff", labels={**crash.labels, "container": "sidecar"})
    payments = dataclasses.replace(crash, labels={**crash.labels, "deployment": "payments"})
    for routes in ("alert-routes.yaml", "alert-routes.sandbox.yaml"):  # sandbox: HighLatency opens incident-response
        router = load_routes(REPO / "deployments" / routes)
        decisions = [router.decide(a) for a in (crash, other_container, latency, payments)]
        assert [d.incident for d in decisions] == ["shop/checkout"] * 3 + ["shop/payments"], routes
        assert decisions[0].deployment != decisions[2].deployment  # two runbooks, one incident


def test_alert_table_row_redacts_labels() -> None:
    row = alert_entry(role="joined", alertname="PodCrashLooping", source="alertmanager", fingerprint="fp",
                      starts_at="2026-11-25T10:15:03Z", labels={"pod": "p-1", "dsn": "postgres://app:hunter2@db/x"},
                      received_at=1_764_065_703.0, joined_at=1_764_065_704.0, resolved_at=None)
    assert row["status"] == "firing" and row["role"] == "joined" and row["received_at"] == "2025-11-25T10:15:03Z"
    assert "pod=p-1" in row["labels"] and "hunter2" not in row["labels"]
    assert alert_entry(**{**_entry_args(), "resolved_at": 1.0})["status"] == "resolved"


def _entry_args() -> dict:
    return dict(role="opened", alertname="A", source="grafana", fingerprint="f", starts_at="s", labels={},
                received_at=0.0, joined_at=None, resolved_at=None)


# --- the spool's side -------------------------------------------------------------------------------------------
def _record(spool: Spool, router: Router, *alerts: Alert, now: float = 1.0) -> list[int]:
    return [row for _o, row in spool.record([(a, router.decide(a)) for a in alerts], now)]


def _crash(fp: str, deployment: str = "checkout") -> Alert:
    crash = _alerts()[0]
    return dataclasses.replace(crash, fingerprint=fp, labels={**crash.labels, "deployment": deployment, "container": fp})


def test_a_workloads_alerts_wait_behind_its_oldest_until_that_one_is_decided(spool: Spool, router: Router) -> None:
    a, b = _record(spool, router, _crash("a"), _crash("b"))
    (c,) = _record(spool, router, _crash("c", deployment="payments"))
    assert [r.id for r in spool.due(10.0)] == [a, b, c]
    spool.mark_retry(a, "deployment not registered yet", next_attempt_at=50.0)
    assert [r.id for r in spool.due(10.0)] == [c]  # b may not open a second run while a's may exist
    assert spool.next_due_at() == 0.0  # c is due now; b is not counted (it follows a)
    spool.mark_dispatched(c, "run-c", 11.0)
    assert spool.next_due_at() == 50.0
    assert [r.id for r in spool.due(60.0)] == [a, b]


def test_join_and_resolve_bookkeeping(spool: Spool, router: Router) -> None:
    a, b, late = _record(spool, router, _crash("a"), _crash("b"), _crash("late"))
    assert spool.mark_dispatched(a, "run-1", 2.0)
    incident = spool.open_incident("shop/checkout")
    assert incident is not None and incident.flow_run_id == "run-1" and incident.opened_by == a
    assert spool.mark_joined(b, incident, 3.0)
    assert not spool.mark_joined(b, incident, 3.5)  # joined already: no second join
    row = spool.get(_crash("b").dedup_key)
    assert (row.state, row.flow_run_id, row.incident_id, row.joined_at) == ("joined", "run-1", incident.id, 3.0)
    assert [i.kind for i in spool.outbox() if i.alert.id == b] == ["received", "joined"]
    assert [m.id for m in spool.members(incident.id)] == [a, b]
    version = spool.get_incident(incident.id).version
    assert version == 2 and [i.id for i in spool.unrecorded_incidents()] == [incident.id]
    spool.mark_recorded(incident.id, version, "artifact-1")
    assert spool.unrecorded_count() == 0

    # a resolution: the table is behind again; `late` (pending, same workload) still counts as firing
    spool.record([(dataclasses.replace(_crash("a"), status="resolved"), None)], 4.0)
    assert spool.get_incident(incident.id).version == 3 and spool.unrecorded_count() == 1
    assert [r.id for r in spool.still_firing(incident)] == [b, late]
    spool.record([(dataclasses.replace(_crash("late"), status="resolved"), None)], 5.0)
    spool.record([(dataclasses.replace(_crash("b"), status="resolved"), None)], 6.0)
    assert spool.still_firing(incident) == []

    # the run ended: closed, and the next alert's run opens a new incident
    spool.close_incident(incident.id, 7.0, "its run run-1 ended (COMPLETED)")
    assert spool.open_incident("shop/checkout") is None
    (d,) = _record(spool, router, _crash("d"), now=8.0)
    assert spool.mark_dispatched(d, "run-2", 9.0)
    assert spool.open_incident("shop/checkout").flow_run_id == "run-2"


def test_a_spool_written_before_incidents_is_migrated_and_its_rows_kept(tmp_path: Path, router: Router) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE alerts (id INTEGER PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
          fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, alertname TEXT NOT NULL, labels TEXT NOT NULL,
          annotations TEXT NOT NULL, url TEXT, state TEXT NOT NULL, reason TEXT, route TEXT, deployment TEXT,
          parameters TEXT, tags TEXT, idempotency_key TEXT NOT NULL, flow_run_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
          next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT, received_at REAL NOT NULL, last_seen_at REAL NOT NULL,
          repeats INTEGER NOT NULL DEFAULT 0, resolved_at REAL, ends_at TEXT, dispatched_at REAL);
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, kind TEXT NOT NULL,
          created_at REAL NOT NULL, UNIQUE (alert_id, kind));
        INSERT INTO alerts (dedup_key, source, fingerprint, starts_at, alertname, labels, annotations, state,
          route, deployment, parameters, tags, idempotency_key, received_at, last_seen_at)
        VALUES ('alertmanager|old|t', 'alertmanager', 'old', 't', 'PodCrashLooping', '{}', '{}', 'pending',
          'pod-crash', 'pod-crash/pod-crash', '{"params": {}}', '[]', 'k8s-runbooks-alert:alertmanager|old|t', 1, 1);
    """)
    db.close()
    spool = Spool(path)
    try:
        (old,) = spool.due(10.0)
        assert old.incident == "alert:alertmanager|old|t"  # an incident of its own
        assert spool.mark_dispatched(old.id, "run-old", 11.0)
        assert spool.open_incident("alert:alertmanager|old|t").flow_run_id == "run-old"
        (new,) = _record(spool, router, _crash("new"), now=12.0)
        assert spool.get(_crash("new").dedup_key).incident_key == "shop/checkout"
    finally:
        spool.close()
