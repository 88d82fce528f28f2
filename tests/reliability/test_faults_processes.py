"""Processes killed or stopped: the alert receiver SIGKILLed mid-storm, the Prefect API stopped and restarted
in the middle of a run (the flow-run process killed under the Runner: test_faults_runner_killed.py).

Everything killed here is private to this module (_faults_procs.py): our own Prefect server, receiver and
Runner; the runbooks act on the session sandbox's cluster.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from k8s_runbooks.sandbox.demo_workload import set_fault
from tests.conftest import Sandbox
from tests.reliability._faults_helpers import NS, Cluster, Runbooks, pod_crash_params, wait_for
from tests.reliability._faults_procs import (
    TOKEN,
    PrefectServer,
    Receiver,
    client_env,
    crash_alert,
    write_routes,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]
SINK = "storm-sink/storm-sink"
TARGET = "payments"


@flow(name="storm-sink")
def storm_sink(params: dict[str, Any]) -> None:
    """Where the receiver sends the storm's alerts: runs stay Scheduled (no runner serves it)."""


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("faults-prefect"))
    server.start()
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: server.api}):
            storm_sink.to_deployment(name="storm-sink").apply()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def receiver(prefect: PrefectServer, sandbox_only: Sandbox, tmp_path: Path) -> Iterator[Receiver]:
    env = client_env(sandbox_only, prefect, tmp_path, K8S_RUNBOOKS_RECEIVER_TOKEN=TOKEN,
                     K8S_RUNBOOKS_RECEIVER_DISPATCH_BACKOFF_MAX_SECONDS="1")
    rec = Receiver(env, write_routes(tmp_path / "routes.yaml", SINK), tmp_path / "spool.sqlite3", tmp_path / "receiver.log")
    rec.start()
    try:
        yield rec
    finally:
        rec.kill()
        if prefect.pid is None:
            prefect.start()  # a failed outage test must not leave the server down for the next test


def _runs_by_fingerprint(prefect: PrefectServer) -> Counter[str]:
    return Counter(r["idempotency_key"].split("|")[1] for r in prefect.runs_of(SINK) if r.get("idempotency_key"))


def test_receiver_sigkilled_mid_storm_dispatches_every_acked_alert_once(prefect: PrefectServer, receiver: Receiver) -> None:
    fingerprints = [f"storm{i:04d}{'c' * 7}" for i in range(60)]
    acked: set[str] = set()
    tally: Counter[str] = Counter()
    lock = threading.Lock()

    def send(batch: list[str]) -> None:
        for fp in batch:
            try:
                ok = receiver.post(crash_alert(fp)).status_code == 200
            except httpx.HTTPError:
                ok = False
            with lock:
                tally["sent"] += 1
                if ok:
                    acked.add(fp)
                    tally["2xx"] += 1
                else:
                    tally["failed"] += 1

    senders = [threading.Thread(target=send, args=(fingerprints[i::4],)) for i in range(4)]
    for t in senders:
        t.start()
    wait_for(lambda: len(acked) >= 15, 60, "the first acks", interval=0.05)
    receiver.kill()  # SIGKILL while four senders are mid-burst
    for t in senders:
        t.join(120)
    acked_before_restart = set(acked)
    receiver.start()
    # Alertmanager re-sends what it could not deliver (and repeats firing alerts): so do we, once.
    send([fp for fp in fingerprints if fp not in acked_before_restart])
    wait_for(receiver.drained, 120, "the spool to drain")

    runs = _runs_by_fingerprint(prefect)
    storm = {fp: n for fp, n in runs.items() if fp.startswith("storm")}
    assert acked == set(fingerprints)
    assert {fp: n for fp, n in storm.items() if n != 1} == {}, "an alert was dispatched more than once"
    assert set(storm) == acked, f"lost: {sorted(acked - set(storm))}"
    print(f"\nreceiver SIGKILL mid-storm: {len(fingerprints)} alerts, {tally['sent']} posts, {tally['2xx']} 2xx, "
          f"{tally['failed']} failed while it was down, {len(acked_before_restart)} acked before the restart, "
          f"{sum(storm.values())} runs created")


@pytest.fixture(scope="module")
def crashing(sandbox_only: Sandbox) -> Iterator[Cluster]:
    cluster = Cluster(sandbox_only)
    cluster.inject_crash(sandbox_only, TARGET)
    yield cluster
    set_fault(sandbox_only.kubeconfig, NS, TARGET, "clear")


def test_prefect_restarted_mid_run_the_run_resumes_and_spooled_alerts_are_dispatched(
        prefect: PrefectServer, receiver: Receiver, sandbox_only: Sandbox, crashing: Cluster, tmp_path: Path) -> None:
    runbooks = Runbooks(sandbox_only, tmp_path)
    runbooks.env.update(client_env(sandbox_only, prefect, tmp_path))
    proc = runbooks.start("pod-crash", **pod_crash_params(TARGET, approval="required", approval_timeout_seconds=300))
    try:
        def paused() -> str | None:
            runs = prefect.post("/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
                                                      "flows": {"name": {"any_": ["pod-crash"]}}})
            return runs[0]["id"] if runs else None

        run_id = wait_for(paused, 240, "the run to pause for approval")
        prefect.stop()
        fps = [f"outage{i:03d}{'d' * 7}" for i in range(10)]
        answers = [receiver.post(crash_alert(fp)).json()["alerts"][0]["outcome"] for fp in fps]
        assert answers == ["queued"] * 10
        wait_for(lambda: receiver.health()["dispatcher"]["prefect_api_ok"] is False, 60, "the dispatcher to notice")
        assert receiver.health()["spool"]["pending"] >= 10
        time.sleep(5)  # the paused run keeps polling a dead API meanwhile
        prefect.start()

        answer = prefect.post(f"/flow_runs/{run_id}/resume", {"run_input": {
            "approve": False, "action": "rollout_undo", "approver": "carol", "comment": "after the outage"}})
        assert answer["status"] == "ACCEPT", answer
        result = Runbooks.finish(proc, timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Either outcome is documented: the run survived the outage and honoured the rejection, or it failed at once
    # naming the lost API. Never: an action, or a run left Paused/Running on the server.
    server_state = wait_for(lambda: prefect.state(run_id)["type"] in ("COMPLETED", "FAILED") and prefect.state(run_id),
                            60, "the run's final state on the server")
    if result.state == "COMPLETED":
        assert "rejected by carol" in (result.message or ""), result.message
    else:
        assert result.state == "FAILED" and "Connect" in (result.message or ""), (result.message, result.stderr[-3000:])
    assert server_state["type"] == result.state
    assert runbooks.executed() == []  # a rejection never acts, outage or not
    wait_for(receiver.drained, 120, "the spooled alerts to be dispatched")
    runs = _runs_by_fingerprint(prefect)
    assert {fp: runs[fp] for fp in fps} == {fp: 1 for fp in fps}
    print(f"\nprefect restart: paused run {run_id} ended {result.state} ({result.message}); "
          f"{len(fps)} alerts accepted while Prefect was down, each dispatched once after")
