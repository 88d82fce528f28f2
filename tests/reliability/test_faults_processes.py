"""Processes killed or stopped: the alert receiver SIGKILLed mid-storm, the Prefect API stopped and restarted
while runs wait for approval (the flow-run process killed under the Runner: test_faults_runner_killed.py).

Everything killed here is private to this module (_faults_procs.py): our own Prefect server, receiver and
Runner; the runbooks act on the session sandbox's cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from k8s_runbooks.sandbox.launchers import LEASE_STORAGE
from tests.conftest import REPO, Sandbox
from tests.reliability._faults_helpers import NS, Api, Cluster, Runbooks, audit_diff, pod_crash_params, wait_for, writes
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
TARGET = "fault-one"  # their own Deployments: see Cluster.ensure
SECOND_TARGET = "fault-two"


@flow(name="storm-sink")
def storm_sink(params: dict[str, Any]) -> None:
    """Where the receiver sends the storm's alerts: runs stay Scheduled (no runner serves it)."""


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("faults-prefect"))
    # The sandbox's server keeps concurrency-slot leases on disk (PREFECT_HOME), not in memory (with the default a
    # restart forgets every lease). The remediation slot itself is a Kubernetes Lease now (remediation_lock.py),
    # which a Prefect restart does not touch; the setting stays for any Prefect concurrency limit.
    assert server.comp.env.get("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE") == LEASE_STORAGE
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
                # one workload each: alerts of one workload would join one incident run (tests/alerts/test_incidents_prefect.py)
                ok = receiver.post(crash_alert(fp, deployment=f"app-{fp[5:9]}")).status_code == 200
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
    cluster.ensure(sandbox_only, TARGET)
    cluster.inject_crash(sandbox_only, TARGET)
    yield cluster
    cluster.delete(TARGET)


@pytest.fixture()
def crashing_too(sandbox_only: Sandbox, crashing: Cluster) -> Iterator[str]:
    """A second crash-looping Deployment: a second runbook run, with its own remediation slot, at the same time."""
    crashing.ensure(sandbox_only, SECOND_TARGET)
    crashing.inject_crash(sandbox_only, SECOND_TARGET)
    yield SECOND_TARGET
    crashing.delete(SECOND_TARGET)


OUTAGE_LINE = "Prefect API unreachable while waiting for approval"
RECOVERY_LINE = "Prefect API answering again after"


def start_logged(runbooks: Runbooks, log: Path, **params: Any) -> subprocess.Popen[str]:
    """Runbooks.start with the run's log in a file, so the test can follow it while the run waits."""
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "tests.reliability._faults_run", "pod-crash", json.dumps(params)],
                                cwd=REPO, env=runbooks.env, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)


def test_prefect_restarted_mid_approval_the_runs_survive_and_spooled_alerts_are_dispatched(
        prefect: PrefectServer, receiver: Receiver, sandbox_only: Sandbox, crashing: Cluster, crashing_too: str,
        tmp_path: Path) -> None:
    """Two pod-crash runs wait for approval (one per Deployment, each holding its remediation slot) while the
    Prefect API is stopped and started again; alerts arrive meanwhile. Both waits must outlive the outage (each
    logs it once and its recovery once), then one run is rejected (changes nothing) and the other approved
    (rolls back exactly once: guard audit and the sandbox's request audit). The outage is the restart itself;
    a longer one also needs each run's slot lease to outlive it (flows/concurrency.py), else the run is stopped
    when its renewal is refused: safe (nothing done), but not a survival."""
    runbooks = Runbooks(sandbox_only, tmp_path)
    runbooks.env.update(client_env(sandbox_only, prefect, tmp_path))
    runbooks.state_dir = Path(runbooks.env["K8S_RUNBOOKS_STATE_DIR"])  # the guard audit is where the runs write it
    api = Api(sandbox_only.api_url)
    logs = {TARGET: tmp_path / f"{TARGET}.log", crashing_too: tmp_path / f"{crashing_too}.log"}
    procs = {t: start_logged(runbooks, logs[t], **pod_crash_params(t, approval="required", approval_timeout_seconds=1800))
             for t in logs}
    try:
        def paused() -> dict[str, str] | None:
            runs = prefect.post("/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
                                                      "flows": {"name": {"any_": ["pod-crash"]}}})
            found = {r["parameters"]["params"]["deployment"]: r["id"] for r in runs}
            # Paused and its form saved (schema, then description): what the UI's Resume dialog needs.
            ready = {t: found[t] for t in logs if t in found
                     and httpx.get(f"{prefect.api}/flow_runs/{found[t]}/input/paused-1-description", timeout=10).is_success}
            return ready if len(ready) == len(logs) else None

        def log(target: str) -> str:
            return logs[target].read_text(errors="replace")

        run_ids: dict[str, str] = wait_for(paused, 300, "both runs to pause for approval")
        before = api.audit()

        outage_start = time.monotonic()
        prefect.stop()
        fps = [f"outage{i:03d}{'d' * 7}" for i in range(10)]
        answers = [receiver.post(crash_alert(fp, deployment=f"app-{fp[6:9]}")).json()["alerts"][0]["outcome"] for fp in fps]
        assert answers == ["queued"] * 10
        wait_for(lambda: receiver.health()["dispatcher"]["prefect_api_ok"] is False, 60, "the dispatcher to notice")
        assert receiver.health()["spool"]["pending"] >= 10
        wait_for(lambda: all(OUTAGE_LINE in log(t) for t in logs), 120, "both waits to notice the outage")
        assert {t: p.poll() for t, p in procs.items()} == {t: None for t in logs}, {t: log(t)[-3000:] for t in logs}
        prefect.start()
        outage_s = time.monotonic() - outage_start
        wait_for(lambda: all(RECOVERY_LINE in log(t) for t in logs), 120, "both waits to see the API again")
        noticed_s = time.monotonic() - outage_start - outage_s
        for t in logs:  # one line when the outage starts, one when it ends: not one per failed poll
            assert log(t).count(OUTAGE_LINE) == 1 and log(t).count(RECOVERY_LINE) == 1, log(t)[-3000:]

        resumed_at = time.monotonic()
        rejected = prefect.post(f"/flow_runs/{run_ids[TARGET]}/resume", {"run_input": {
            "approve": False, "action": "rollout_undo", "approver": "carol", "comment": "after the outage"}})
        assert rejected["status"] == "ACCEPT", rejected
        approved = prefect.post(f"/flow_runs/{run_ids[crashing_too]}/resume", {"run_input": {
            "approve": True, "action": "rollout_undo", "approver": "alice", "comment": "bad deploy, after the outage"}})
        assert approved["status"] == "ACCEPT", approved
        results = {t: Runbooks.finish(p, timeout=420) for t, p in procs.items()}
        resume_to_end_s = time.monotonic() - resumed_at
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()

    no, yes = results[TARGET], results[crashing_too]
    assert (no.state, no.flow_run_id) == ("COMPLETED", run_ids[TARGET]), (no.message, log(TARGET)[-3000:])
    assert "rejected by carol" in (no.message or ""), no.message
    assert runbooks.executed(run_ids[TARGET]) == []  # a rejection never acts, outage or not
    assert (yes.state, yes.flow_run_id) == ("COMPLETED", run_ids[crashing_too]), (yes.message, log(crashing_too)[-3000:])
    executed = runbooks.executed(run_ids[crashing_too])
    assert [(a["action"]["kind"], a["action"]["target"]["name"], a["actor"]) for a in executed] == \
        [("rollout_undo", crashing_too, "alice — unverified (Prefect UI)")]  # a REST answer is a claim, not an identity
    assert writes(audit_diff(before, api.audit())) == {("patch", "deployments", "", NS): 1}  # one rollback, once
    for t in logs:
        wait_for(lambda: prefect.state(run_ids[t])["type"] == "COMPLETED", 60, f"the {t} run's final state on the server")

    wait_for(receiver.drained, 120, "the spooled alerts to be dispatched")
    runs = _runs_by_fingerprint(prefect)
    assert {fp: runs[fp] for fp in fps} == {fp: 1 for fp in fps}
    print(f"\nprefect restart mid-approval: API down {outage_s:.0f} s (stop → healthy again); both waits saw it "
          f"again {noticed_s:.0f} s later; resume → both runs ended {resume_to_end_s:.0f} s; rejected run "
          f"{no.message!r}; approved run {yes.message!r}; {len(fps)} alerts accepted while Prefect was down, each "
          f"dispatched once after; load {Path('/proc/loadavg').read_text().split()[:3]}")
