"""Spool: unique key per fingerprint+startsAt, batched transactions, state survives reopening (replay)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from k8s_runbooks.alerts.payloads import AlertmanagerPayload
from k8s_runbooks.alerts.routing import Router
from k8s_runbooks.alerts.spool import Spool
from tests.alerts.conftest import payload_bytes


def _items(router: Router):  # noqa: ANN202
    alerts = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()
    return [(a, router.decide(a)) for a in alerts]


def test_same_fingerprint_and_starts_at_is_one_row_new_starts_at_is_another(spool: Spool, router: Router) -> None:
    items = _items(router)
    assert [o for o, _ in spool.record(items, 1.0)] == ["queued", "queued", "ignored"]
    assert [o for o, _ in spool.record(items, 2.0)] == ["duplicate"] * 3
    alert, decision = items[0]
    later = dataclasses.replace(alert, starts_at="2026-11-25T12:00:00Z")  # the same alert firing again later
    assert spool.record([(later, decision)], 3.0)[0][0] == "queued"
    assert spool.pending_count() == 3 and len(spool.rows()) == 4


def test_pending_rows_survive_reopen_and_dispatch_state_is_kept(tmp_path: Path, router: Router) -> None:
    path = tmp_path / "spool.sqlite3"
    first = Spool(path)
    first.record(_items(router), 1.0)
    row_ids = [r.id for r in first.due(now=10.0)]
    first.mark_dispatched(row_ids[0], "run-1", 5.0)
    first.close()  # as after a crash: nothing but the file remains

    again = Spool(path)
    (pending,) = again.due(now=10.0)
    assert pending.id == row_ids[1] and pending.idempotency_key.endswith(pending.dedup_key)
    done = again.get(again.rows()[0].dedup_key)
    assert done.state == "dispatched" and done.flow_run_id == "run-1"
    again.mark_retry(pending.id, "Prefect down", next_attempt_at=100.0)
    assert again.due(now=10.0) == [] and again.next_due_at() == 100.0
    assert again.get(pending.dedup_key).attempts == 1
    again.close()


def test_outbox_holds_one_event_per_alert_and_resolution(spool: Spool, router: Router) -> None:
    items = _items(router)
    spool.record(items, 1.0)
    spool.record(items, 2.0)  # repeats emit nothing new
    resolved = dataclasses.replace(items[0][0], status="resolved", ends_at="2026-11-25T10:30:00Z")
    spool.record([(resolved, None)], 3.0)
    spool.record([(resolved, None)], 4.0)
    kinds = [(i.alert.alertname, i.kind) for i in spool.outbox()]
    assert kinds == [("PodCrashLooping", "received"), ("HighLatency", "received"), ("Watchdog", "received"),
                     ("PodCrashLooping", "resolved")]
    spool.delete_outbox([i.id for i in spool.outbox()])
    assert spool.outbox_count() == 0


def test_a_failed_batch_stores_nothing(spool: Spool, router: Router) -> None:
    items = _items(router)
    broken = (dataclasses.replace(items[1][0], labels={"alertname": object()}), items[1][1])  # not JSON-serialisable
    try:
        spool.record([items[0], broken], 1.0)
    except TypeError:
        pass
    else:
        raise AssertionError("expected the batch to fail")
    assert spool.rows() == [] and spool.outbox_count() == 0


def test_alert_resolved_before_dispatch_never_starts_a_run(spool: Spool, router: Router) -> None:
    items = _items(router)
    spool.record(items, 1.0)
    first = items[0][0]
    resolved = dataclasses.replace(first, status="resolved", ends_at="2026-11-25T10:30:00Z")
    assert spool.record([(resolved, None)], 2.0)[0][0] == "resolved"
    row = spool.get(first.dedup_key)
    assert row.state == "resolved" and "no remediation" in (row.reason or "")
    assert first.dedup_key not in {r.dedup_key for r in spool.due(now=10.0)}
    # a row already dispatched keeps its state; the resolution is only stamped on it
    other = items[1][0]
    (due,) = [r for r in spool.due(now=10.0) if r.dedup_key == other.dedup_key]
    spool.mark_dispatched(due.id, "run-2", 3.0)
    spool.record([(dataclasses.replace(other, status="resolved"), None)], 4.0)
    assert spool.get(other.dedup_key).state == "dispatched" and spool.get(other.dedup_key).resolved_at == 4.0
