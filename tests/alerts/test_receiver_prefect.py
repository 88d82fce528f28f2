"""The receiver as a real process against a real Prefect server with real deployments (no worker needed).

Runs stay Scheduled; what matters is that they exist once per alert, with the right parameters and the
idempotency key, whatever happens to Prefect or the receiver in between.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_runbooks.alerts.auth import sentry_signature
from tests.alerts.conftest import REPO, payload, payload_bytes
from tests.alerts.prefect_harness import SENTRY_SECRET, PrefectServer, Receiver, by_key
from tests.alerts.prefect_harness import crash_notification as _crash_alert
from tests.conftest import free_ports
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.slow
_by_key = by_key


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    return wait_for(check, timeout=timeout, what=what)


def test_repeated_alert_is_one_run_and_resolved_starts_none(prefect_server: PrefectServer, receiver: Receiver) -> None:
    fp = "0123456789abcdef"
    for _ in range(3):  # Alertmanager repeats the group while it fires
        assert receiver.post("/v1/alerts/alertmanager", _crash_alert(fp)).status_code == 200
    _wait("dispatch", receiver.drained)
    (run,) = _by_key(prefect_server.runs("pod-crash/pod-crash"), fp)
    assert run["parameters"]["params"]["namespace"] == "shop"
    assert run["parameters"]["params"]["deployment"] == "checkout"
    assert run["parameters"]["params"]["approval"] == "required"
    # the alert's severity rides along for the page an escalation may send (flows/chatops.py)
    assert {"alert", "alert-source:alertmanager", "alert-route:pod-crash", "alert-severity:critical"} <= set(run["tags"])

    resolved = payload("alertmanager_resolved")
    resolved["alerts"][0]["fingerprint"] = fp
    resp = receiver.post("/v1/alerts/alertmanager", json.dumps(resolved).encode())
    assert resp.json()["alerts"][0]["outcome"] == "resolved"
    # A fresh resolved-only alert (never seen firing) must not start anything either.
    resolved["alerts"][0]["fingerprint"] = "ffffffffffff0000"
    assert receiver.post("/v1/alerts/alertmanager", json.dumps(resolved).encode()).status_code == 200
    _wait("events", receiver.drained)
    assert len(_by_key(prefect_server.runs("pod-crash/pod-crash"), fp)) == 1
    assert _by_key(prefect_server.runs("pod-crash/pod-crash"), "ffffffffffff0000") == []

    def events() -> list[dict[str, Any]]:
        found = httpx.post(f"{prefect_server.api}/events/filter", timeout=10, json={
            "filter": {"event": {"prefix": ["k8s-runbooks.alert."]}, "any_resource": {"id": [f"k8s-runbooks.alert.alertmanager.{fp}"]}},
            "limit": 50}).json()["events"]
        return found if len(found) >= 2 else []

    found = _wait("both events stored by Prefect (events are persisted asynchronously)", events, timeout=30)
    assert sorted(e["event"] for e in found) == ["k8s-runbooks.alert.firing", "k8s-runbooks.alert.resolved"]
    resolved_event = next(e for e in found if e["event"].endswith("resolved"))
    assert resolved_event["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{run['id']}"
    metrics = httpx.get(f"{receiver.url}/metrics", timeout=5).text
    assert 'k8s_runbooks_receiver_flow_runs_created_total{deployment="pod-crash/pod-crash"} 1.0' in metrics


def _state(prefect_server: PrefectServer, run_id: str) -> str:
    return prefect_server.state(run_id)


def test_resolved_alert_cancels_its_run_while_it_waits(prefect_server: PrefectServer, receiver: Receiver) -> None:
    """Nothing acts on a resolved alert: a run not started yet, or paused for approval, is cancelled; a run
    of another alert is left alone."""
    waiting, other = "c0ffee0000000001", "c0ffee0000000002"
    for fp in (waiting, other):
        assert receiver.post("/v1/alerts/alertmanager", _crash_alert(fp, deployment=f"svc-{fp[-4:]}")).status_code == 200
    _wait("dispatch", receiver.drained)
    (run,) = _by_key(prefect_server.runs("pod-crash/pod-crash"), waiting)
    (kept,) = _by_key(prefect_server.runs("pod-crash/pod-crash"), other)
    paused = httpx.post(f"{prefect_server.api}/flow_runs/{run['id']}/set_state", timeout=10, json={
        "state": {"type": "PAUSED", "name": "Paused", "message": "waiting for approval"}, "force": True})
    assert paused.json()["status"] == "ACCEPT", paused.text
    assert _state(prefect_server, run["id"]) == "PAUSED"

    resolved = payload("alertmanager_resolved")
    resolved["alerts"][0]["fingerprint"] = waiting
    resolved["alerts"][0]["labels"].update(deployment=f"svc-{waiting[-4:]}")
    assert receiver.post("/v1/alerts/alertmanager", json.dumps(resolved).encode()).json()["alerts"][0]["outcome"] == "resolved"
    _wait("the waiting run cancelled", lambda: _state(prefect_server, run["id"]) == "CANCELLED", timeout=30)
    detail = httpx.get(f"{prefect_server.api}/flow_runs/{run['id']}", timeout=10).json()["state"]["message"]
    assert "resolved while the run waited" in detail and "nothing was changed" in detail, detail
    assert _state(prefect_server, kept["id"]) == "SCHEDULED"  # its alert still fires
    metrics = httpx.get(f"{receiver.url}/metrics", timeout=5).text
    assert "k8s_runbooks_receiver_flow_runs_cancelled_total 1.0" in metrics


def test_grafana_and_sentry_route_to_their_deployments(prefect_server: PrefectServer, receiver: Receiver) -> None:
    grafana = receiver.post("/v1/alerts/grafana", payload_bytes("grafana_firing"))
    assert grafana.status_code == 200 and grafana.json()["alerts"][0]["route"] == "high-latency"
    sentry = payload("sentry_event_alert")  # another workload than Grafana's alert (shop/checkout), or it would join
    sentry["data"]["event"]["tags"] = [[k, "payments" if k == "deployment" else v] for k, v in sentry["data"]["event"]["tags"]]
    body = json.dumps(sentry).encode()
    unsigned = receiver.post("/v1/alerts/sentry", body, {"Sentry-Hook-Resource": "event_alert"})
    assert unsigned.status_code == 401
    signed = receiver.post("/v1/alerts/sentry", body, {"Sentry-Hook-Resource": "event_alert",
                                                       "Sentry-Hook-Signature": sentry_signature(body, SENTRY_SECRET)})
    assert signed.status_code == 200 and signed.json()["alerts"][0]["route"] == "sentry-crash"
    _wait("dispatch", receiver.drained)
    (latency,) = _by_key(prefect_server.runs("high-latency/high-latency"), "c6eadffa33fcdf37")
    assert latency["parameters"]["params"]["service"] == "checkout"
    (crash,) = _by_key(prefect_server.runs("pod-crash/pod-crash"), "sentry-issue-1117540176")
    assert crash["parameters"]["params"]["deployment"] == "payments"
    assert "alert-source:sentry" in crash["tags"]


def test_prefect_down_alerts_accepted_then_dispatched_once(prefect_server: PrefectServer, receiver: Receiver) -> None:
    prefect_server.stop()
    fps = [f"down{i:04d}aaaaaaaa" for i in range(20)]
    for fp in fps:
        resp = receiver.post("/v1/alerts/alertmanager", _crash_alert(fp, deployment=f"svc-{fp[4:8]}"))
        assert resp.status_code == 200 and resp.json()["alerts"][0]["outcome"] == "queued"
    assert receiver.post("/v1/alerts/alertmanager", _crash_alert(fps[0], deployment="svc-0000")).json()["alerts"][0]["outcome"] == "duplicate"
    _wait("the dispatcher to notice", lambda: receiver.health()["dispatcher"]["prefect_api_ok"] is False)
    assert receiver.health()["spool"]["pending"] == 20

    prefect_server.start()
    _wait("dispatch after Prefect returns", receiver.drained, timeout=90)
    runs = prefect_server.runs("pod-crash/pod-crash")
    for fp in fps:
        (run,) = _by_key(runs, fp)
        assert run["parameters"]["params"]["deployment"] == f"svc-{fp[4:8]}"


def test_sigkilled_receiver_replays_its_spool_without_doubles(prefect_server: PrefectServer, receiver: Receiver) -> None:
    fps = [f"kill{i:04d}bbbbbbbb" for i in range(30)]
    for fp in fps:  # one workload each: alerts of one workload join one run (test_incidents_prefect.py)
        assert receiver.post("/v1/alerts/alertmanager", _crash_alert(fp, deployment=f"svc-{fp[4:8]}")).status_code == 200
    receiver.stop(signal.SIGKILL)  # right after the acks: part dispatched, part still pending
    pending_after_kill = _pending_in(receiver.spool)

    # One pending alert's run was created but the receiver died before marking it: the idempotency key must
    # make the replay pick up that run instead of creating a second one.
    preexisting = None
    if pending_after_kill:
        dedup_key, key = pending_after_kill[0]
        dep = httpx.get(f"{prefect_server.api}/deployments/name/pod-crash/pod-crash", timeout=10).json()

        def create() -> str:  # a raw HTTP caller retries SQLite's "database is locked" 503s itself
            resp = httpx.post(f"{prefect_server.api}/deployments/{dep['id']}/create_flow_run", timeout=10, json={
                "idempotency_key": key, "parameters": {"params": {"namespace": "shop", "deployment": "checkout"}}})
            if resp.status_code >= 300:
                raise ValueError(f"HTTP {resp.status_code}: {resp.text[:300]}")
            return resp.json()["id"]

        preexisting = wait_for(create, timeout=60, what="the run created before the replay")

    receiver.start()
    _wait("replay", receiver.drained, timeout=90)
    runs = prefect_server.runs("pod-crash/pod-crash")
    for fp in fps:
        assert len(_by_key(runs, fp)) == 1, fp
    if preexisting:
        assert _flow_run_of(receiver.spool, pending_after_kill[0][0]) == preexisting


def _pending_in(spool: Path) -> list[tuple[str, str]]:
    import sqlite3

    db = sqlite3.connect(spool)
    try:
        return db.execute("SELECT dedup_key, idempotency_key FROM alerts WHERE state = 'pending' ORDER BY id").fetchall()
    finally:
        db.close()


def _flow_run_of(spool: Path, dedup_key: str) -> str | None:
    import sqlite3

    db = sqlite3.connect(spool)
    try:
        return db.execute("SELECT flow_run_id FROM alerts WHERE dedup_key = ?", (dedup_key,)).fetchone()[0]
    finally:
        db.close()


def test_bad_routes_file_fails_at_startup_with_file_and_line(prefect_server: PrefectServer, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - name: x\n    match: {alertname: A}\n    deployment: nope\n")
    env = {**prefect_server.env()}
    result = subprocess.run([sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(free_ports(1)[0]),
                             "--routes", str(routes), "--spool", str(tmp_path / "s.sqlite3")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{routes}:4: routes.0.deployment" in result.stderr and "Traceback" not in result.stderr


def test_missing_prefect_api_url_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
    env["PREFECT_HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(free_ports(1)[0]),
                             "--routes", str(REPO / "deployments" / "alert-routes.yaml"), "--spool", str(tmp_path / "s.sqlite3")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "PREFECT_API_URL is not set" in result.stderr




class _ResolvesDuringCreate:
    """The real Prefect client, except that the alert's resolved notification is stored (as the app would,
    through its own spool connection) while create_flow_run_from_deployment is in flight."""

    def __init__(self, api: str, spool_path: Path, resolved: Any) -> None:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Built in the dispatcher thread, where the test's settings context does not reach.
        with temporary_settings({PREFECT_API_URL: api}):
            self._client = get_client(sync_client=True, httpx_settings={"timeout": 10})
        self._spool_path, self._resolved = spool_path, resolved

    def __enter__(self) -> _ResolvesDuringCreate:
        self._client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_flow_run_from_deployment(self, *args: Any, **kwargs: Any) -> Any:
        from k8s_runbooks.alerts.spool import Spool

        other = Spool(self._spool_path)
        try:
            assert other.record([(self._resolved, None)], time.time())[0][0] == "resolved"
        finally:
            other.close()
        return self._client.create_flow_run_from_deployment(*args, **kwargs)


def test_alert_resolved_while_its_run_is_created_gets_the_run_cancelled(prefect_server: PrefectServer, tmp_path: Path) -> None:
    import dataclasses

    from k8s_runbooks_prefect.alerts.dispatcher import RESOLVED_DURING_CREATION, Dispatcher
    from k8s_runbooks.alerts.metrics import ReceiverMetrics
    from k8s_runbooks.alerts.payloads import AlertmanagerPayload
    from k8s_runbooks.alerts.routing import load_routes
    from k8s_runbooks.alerts.spool import Spool

    fp = "racefeedface0001"
    alert = AlertmanagerPayload.model_validate_json(_crash_alert(fp)).normalise()[0]
    spool_path = tmp_path / "spool.sqlite3"
    spool = Spool(spool_path)
    spool.record([(alert, load_routes(REPO / "deployments" / "alert-routes.yaml").decide(alert))], time.time())
    resolved = dataclasses.replace(alert, status="resolved", ends_at="2026-11-25T10:30:00Z")
    metrics = ReceiverMetrics()
    dispatcher = Dispatcher(spool_path, metrics,
                            client_factory=lambda: _ResolvesDuringCreate(prefect_server.api, spool_path, resolved))
    dispatcher.start()
    try:
        row = _wait("the dispatcher to handle the row", lambda: (r := spool.get(alert.dedup_key)) and r.flow_run_id and r)
    finally:
        dispatcher.stop()
    spool.close()
    assert row.state == "resolved" and row.reason == RESOLVED_DURING_CREATION
    (run,) = _by_key(prefect_server.runs("pod-crash/pod-crash"), fp)
    assert run["id"] == row.flow_run_id and run["state"]["type"] == "CANCELLED"
    assert metrics.runs_cancelled._value.get() == 1 and metrics.runs_created.labels("pod-crash/pod-crash")._value.get() == 0
