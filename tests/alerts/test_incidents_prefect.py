"""One incident per workload, end to end: the receiver as a real process against a real Prefect server.

Alerts of one workload (one per crashing container, or another alertname of it) join the run the first one opened;
the join is recorded on that run (its `incident-alerts` table), in the receiver's metrics and log, survives a
receiver killed mid-way, and reaches the post-mortem; the run is cancelled while it waits only once every alert of
the incident resolved. Runs stay Scheduled (no worker): "waiting" is their real state.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_runbooks.alerts.incidents import ALERTS_ARTIFACT_KEY
from tests.alerts.hold_proxy import HoldingProxy
from tests.alerts.prefect_harness import (TOKEN, PrefectServer, Receiver, by_key, crash_alert, latency_alert, notification,
                                          resolved)
from tests.conftest import free_ports
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.slow
AM = "/v1/alerts/alertmanager"


def _post(receiver: Receiver, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    resp = receiver.post(AM, notification(*alerts))
    assert resp.status_code == 200, resp.text
    return resp.json()["alerts"]


def _drain(receiver: Receiver, timeout: float = 60) -> None:
    wait_for(receiver.drained, timeout=timeout, what="the receiver to dispatch, emit and record everything")


def _runs_of(prefect_server: PrefectServer, deployment: str, fps: list[str]) -> list[dict[str, Any]]:
    runs = prefect_server.runs(deployment)
    return [r for fp in fps for r in by_key(runs, fp)]


def _table(prefect_server: PrefectServer, run_id: str) -> list[dict[str, str]]:
    """The run's alert table (exactly one artifact, or the test fails)."""
    (artifact,) = prefect_server.artifacts(run_id, ALERTS_ARTIFACT_KEY)
    assert artifact["type"] == "table"
    return json.loads(artifact["data"])


def _spool_states(receiver: Receiver) -> dict[str, tuple[str, str | None]]:
    return {fp: (state, run) for fp, state, run in receiver.spool_rows("SELECT fingerprint, state, flow_run_id FROM alerts")}


def test_alerts_of_one_workload_join_its_run_others_get_their_own(prefect_server: PrefectServer, receiver: Receiver) -> None:
    containers = [f"join{i:04d}aaaaaaaa" for i in range(4)]  # PodCrashLooping: one alert per container
    answers = _post(receiver, *(crash_alert(fp, deployment="cart", container=f"c{i}") for i, fp in enumerate(containers)))
    assert {a["incident"] for a in answers} == {"shop/cart"}
    latency = "join9999bbbbbbbb"  # another alertname of the same workload (routed to high-latency on its own)
    other = "join8888cccccccc"  # another workload
    _post(receiver, latency_alert(latency, service="cart"), crash_alert(other, deployment="orders"))
    _drain(receiver)

    (run,) = _runs_of(prefect_server, "pod-crash/pod-crash", containers)
    assert by_key([run], containers[0]) == [run]  # the first alert opened the incident
    assert _runs_of(prefect_server, "high-latency/high-latency", [latency]) == []
    (own,) = _runs_of(prefect_server, "pod-crash/pod-crash", [other])
    assert own["id"] != run["id"] and own["parameters"]["params"]["deployment"] == "orders"

    states = _spool_states(receiver)
    assert states[containers[0]] == ("dispatched", run["id"])
    assert all(states[fp] == ("joined", run["id"]) for fp in [*containers[1:], latency])
    table = _table(prefect_server, run["id"])
    assert [(r["role"], r["alertname"], r["fingerprint"]) for r in table] == (
        [("opened", "PodCrashLooping", containers[0])] + [("joined", "PodCrashLooping", fp) for fp in containers[1:]]
        + [("joined", "HighLatency", latency)])
    assert all(r["status"] == "firing" and r["received_at"] and r["source"] == "alertmanager" for r in table)
    assert "container=c1" in table[1]["labels"] and table[1]["joined_at"]
    assert [r["fingerprint"] for r in _table(prefect_server, own["id"])] == [other]

    metrics = receiver.metrics()
    assert 'k8s_runbooks_receiver_alerts_joined_total{source="alertmanager"} 4.0' in metrics
    assert 'k8s_runbooks_receiver_flow_runs_created_total{deployment="pod-crash/pod-crash"} 2.0' in metrics
    log = receiver.log.read_text()
    assert f"joined incident shop/cart: flow run {run['id']}" in log

    def joined_event() -> list[dict[str, Any]]:  # Prefect stores events asynchronously
        return httpx.post(f"{prefect_server.api}/events/filter", timeout=10, json={
            "filter": {"event": {"name": ["k8s-runbooks.alert.joined"]},
                       "any_resource": {"id": [f"k8s-runbooks.alert.alertmanager.{latency}"]}}, "limit": 5}).json()["events"]

    (event,) = wait_for(joined_event, timeout=30, what="the joined event")
    assert event["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{run['id']}"
    assert event["payload"]["incident"] == "shop/cart" and event["payload"]["disposition"] == "joined"


def test_after_the_incident_run_ended_the_next_alert_opens_a_new_run(prefect_server: PrefectServer, receiver: Receiver) -> None:
    first, second = "ended000aaaaaaaa", "ended001aaaaaaaa"
    _post(receiver, crash_alert(first, deployment="billing"))
    _drain(receiver)
    (run,) = _runs_of(prefect_server, "pod-crash/pod-crash", [first])
    prefect_server.set_state(run["id"], "COMPLETED", "Completed", "resolved")

    _post(receiver, crash_alert(second, deployment="billing"))
    _drain(receiver)
    (new,) = _runs_of(prefect_server, "pod-crash/pod-crash", [second])
    assert new["id"] != run["id"]
    assert _spool_states(receiver)[second] == ("dispatched", new["id"])
    assert [r["fingerprint"] for r in _table(prefect_server, run["id"])] == [first]
    assert [(r["role"], r["fingerprint"]) for r in _table(prefect_server, new["id"])] == [("opened", second)]
    closed = receiver.spool_rows("SELECT closed_reason FROM incidents WHERE flow_run_id = ?", run["id"])
    assert closed == [(f"its run {run['id']} ended (COMPLETED)",)]


def test_run_cancelled_only_when_every_alert_of_its_incident_resolved(prefect_server: PrefectServer, receiver: Receiver) -> None:
    crash, slow = crash_alert("resolve0aaaaaaaa", deployment="search"), latency_alert("resolve1bbbbbbbb", service="search")
    _post(receiver, crash, slow)
    _drain(receiver)
    (run,) = _runs_of(prefect_server, "pod-crash/pod-crash", ["resolve0aaaaaaaa"])

    _post(receiver, resolved(crash))  # the crash stopped, the latency alert still fires
    _drain(receiver)
    assert prefect_server.state(run["id"]) == "SCHEDULED"
    assert "k8s_runbooks_receiver_resolved_incident_kept_total 1.0" in receiver.metrics()
    assert [(r["alertname"], r["status"]) for r in _table(prefect_server, run["id"])] == [
        ("PodCrashLooping", "resolved"), ("HighLatency", "firing")]
    assert "still firing: HighLatency (resolve1bbbbbbbb)" in receiver.log.read_text()

    _post(receiver, resolved(slow))
    _drain(receiver)
    wait_for(lambda: prefect_server.state(run["id"]) == "CANCELLED", timeout=30, what="the waiting run cancelled")
    message = prefect_server.run(run["id"])["state"]["message"]
    assert "all 2 alerts of incident shop/search resolved while the run waited" in message, message
    assert "k8s_runbooks_receiver_flow_runs_cancelled_total 1.0" in receiver.metrics()
    assert {r["status"] for r in _table(prefect_server, run["id"])} == {"resolved"}


@pytest.fixture()
def proxied(prefect_server: PrefectServer, tmp_path: Path) -> Iterator[tuple[Receiver, HoldingProxy]]:
    """A receiver whose Prefect calls go through a HoldingProxy (so a test can stop it inside one call)."""
    with HoldingProxy("127.0.0.1", prefect_server.port) as proxy:
        port = free_ports(1)[0]
        env = {**prefect_server.env(), "PREFECT_API_URL": f"{proxy.url}/api", "K8S_RUNBOOKS_RECEIVER_TOKEN": TOKEN,
               "K8S_RUNBOOKS_RECEIVER_DISPATCH_BACKOFF_MAX_SECONDS": "1"}
        rec = Receiver(f"http://127.0.0.1:{port}", tmp_path / "spool.sqlite3", env, port, tmp_path / "receiver.log")
        rec.start()
        try:
            yield rec, proxy
        finally:
            rec.stop()
            print(rec.log.read_text()[-3000:])


def _killed_in_held_call(receiver: Receiver, proxy: HoldingProxy) -> None:
    assert proxy.held.wait(60), "the receiver never made the held call"
    receiver.stop(signal.SIGKILL)
    proxy.release()


def test_receiver_killed_between_join_spooled_and_recorded_replays_it_once(
        prefect_server: PrefectServer, proxied: tuple[Receiver, HoldingProxy]) -> None:
    receiver, proxy = proxied
    a, b, c = "killjoin0aaaaaaa", "killjoin1aaaaaaa", "killjoin2aaaaaaa"

    # 1. The table's create reaches Prefect, its answer never comes back: killed with the artifact made but unknown.
    proxy.hold(lambda method, path: "mute" if (method, path) == ("POST", "/api/artifacts/") else None)
    _post(receiver, crash_alert(a, deployment="ledger"), crash_alert(b, deployment="ledger"))
    (run,) = wait_for(lambda: _runs_of(prefect_server, "pod-crash/pod-crash", [a]), timeout=60, what="the incident run")
    wait_for(lambda: prefect_server.artifacts(run["id"], ALERTS_ARTIFACT_KEY), timeout=60, what="the table created")
    _killed_in_held_call(receiver, proxy)
    assert _spool_states(receiver)[b] == ("joined", run["id"])
    receiver.start()
    _drain(receiver)
    assert [(r["role"], r["fingerprint"]) for r in _table(prefect_server, run["id"])] == [("opened", a), ("joined", b)]

    # 2. A join committed in the spool, its table rewrite never sent: killed there, the replay records it once.
    proxy.hold(lambda method, path: "drop" if method == "PATCH" and path.startswith("/api/artifacts/") else None)
    _post(receiver, crash_alert(c, deployment="ledger"))
    _killed_in_held_call(receiver, proxy)
    assert _spool_states(receiver)[c] == ("joined", run["id"])
    assert [r["fingerprint"] for r in _table(prefect_server, run["id"])] == [a, b]  # the join is not on the run yet
    receiver.start()
    _drain(receiver)
    assert [(r["role"], r["fingerprint"]) for r in _table(prefect_server, run["id"])] == [
        ("opened", a), ("joined", b), ("joined", c)]
    assert [r["id"] for r in _runs_of(prefect_server, "pod-crash/pod-crash", [a, b, c])] == [run["id"]]  # no second run


def test_postmortem_lists_every_alert_of_the_incident_also_for_a_subflow(
        prefect_server: PrefectServer, receiver: Receiver) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    from k8s_runbooks.postmortem.render import render_markdown
    from k8s_runbooks_prefect.postmortem.assemble import assemble

    secret = "postgres://app:hunter2-secret@db.shop:5432/shop"
    opened, joined = "pmortem0aaaaaaaa", "pmortem1bbbbbbbb"
    _post(receiver, crash_alert(opened, deployment="payments"))
    _post(receiver, latency_alert(joined, service="payments"))
    _post(receiver, crash_alert("pmortem2cccccccc", deployment="payments", dsn=secret))
    _drain(receiver)
    (run,) = _runs_of(prefect_server, "pod-crash/pod-crash", [opened])

    # incident-response dispatching pod-crash: the runbook runs as a subflow of the run the receiver created
    api = prefect_server.api
    task = httpx.post(f"{api}/task_runs/", timeout=10, json={
        "flow_run_id": run["id"], "task_key": "pod-crash-subflow", "dynamic_key": "0", "name": "pod-crash-0"}).json()
    child = httpx.post(f"{api}/flow_runs/", timeout=10, json={
        "flow_id": run["flow_id"], "parent_task_run_id": task["id"], "name": "pod-crash-subflow",
        "state": {"type": "SCHEDULED", "name": "Scheduled"}}).json()

    async def build(run_id: str) -> Any:
        async with get_client() as client:
            return await assemble(run_id, client)

    with temporary_settings({PREFECT_API_URL: api}):
        parent_pm, child_pm = run_coro_as_sync(build(run["id"])), run_coro_as_sync(build(child["id"]))
    for pm in (parent_pm, child_pm):
        assert [(a.role, a.alertname, a.fingerprint) for a in pm.alerts] == [
            ("opened", "PodCrashLooping", opened), ("joined", "HighLatency", joined),
            ("joined", "PodCrashLooping", "pmortem2cccccccc")]
    markdown = render_markdown(parent_pm)
    assert "## Alerts" in markdown and "3 alert(s) opened or joined this incident (2 joined" in markdown
    assert "| opened | PodCrashLooping | alertmanager | firing |" in markdown
    assert "| joined | HighLatency | alertmanager | firing |" in markdown
    assert "3 alerts were one incident (2 joined the running incident): HighLatency, PodCrashLooping." in parent_pm.summary
    assert "hunter2" not in markdown and "hunter2" not in json.dumps(_table(prefect_server, run["id"]))
    assert "## Alerts" in render_markdown(child_pm)


def test_tables_are_written_in_bounded_slices_so_new_alerts_are_not_held_back(
        prefect_server: PrefectServer, tmp_path: Path) -> None:
    """Under a storm of new incidents the dispatcher must not stay in the table writes until every table is current:
    one pass writes tables for at most its budget (at least one), the rest wait for the next pass."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from k8s_runbooks.alerts.metrics import ReceiverMetrics
    from k8s_runbooks.alerts.payloads import AlertmanagerPayload
    from k8s_runbooks.alerts.routing import load_routes
    from k8s_runbooks.alerts.spool import Spool
    from k8s_runbooks_prefect.alerts.incidents import Incidents
    from tests.alerts.conftest import ROUTES

    router = load_routes(ROUTES)
    alerts = AlertmanagerPayload.model_validate_json(notification(
        *(crash_alert(f"slice{i:03d}aaaaaaaa", deployment=f"slice{i}") for i in range(3)))).normalise()
    dep = httpx.get(f"{prefect_server.api}/deployments/name/pod-crash/pod-crash", timeout=10).json()
    spool = Spool(tmp_path / "spool.sqlite3")
    try:
        spool.record([(a, router.decide(a)) for a in alerts], 1.0)
        runs = []
        for row in spool.due(2.0):  # each alert opens its own incident on a real run
            run = httpx.post(f"{prefect_server.api}/deployments/{dep['id']}/create_flow_run", timeout=10,
                             json={"parameters": row.parameters}).json()
            assert spool.mark_dispatched(row.id, run["id"], 2.0)
            runs.append(run["id"])
        assert spool.unrecorded_count() == 3

        incidents = Incidents(ReceiverMetrics())
        with temporary_settings({PREFECT_API_URL: prefect_server.api}), get_client(sync_client=True) as client:
            incidents.record(client, spool, budget_s=0)  # no budget left: one table, then back to the alerts
            assert spool.unrecorded_count() == 2
            assert [len(prefect_server.artifacts(r, ALERTS_ARTIFACT_KEY)) for r in runs] == [1, 0, 0]
            incidents.record(client, spool)  # a pass with its budget: the rest
        assert spool.unrecorded_count() == 0
        assert [[e["fingerprint"] for e in _table(prefect_server, r)] for r in runs] == [
            [f"slice{i:03d}aaaaaaaa"] for i in range(3)]
    finally:
        spool.close()
