"""A runbook's flow-run process killed mid-run under the Runner: CRASHED, and its remediation never repeated; the
workload's remediation slot (a Lease in its namespace) comes back once the dead holder's lease expires, while a
live holder keeps its slot.

Its own module (own private Prefect server, a freshly injected crash): after the receiver and outage tests in
test_faults_processes.py, the first run here did not act within 240 s in CI, while alone it always did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flows.concurrency import LEASE_SECONDS, slot_name
from k8s_runbooks.kube import leases
from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.models import WorkloadRef
from k8s_runbooks.remediation_lock import RemediationLock, holder_of
from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path
from k8s_runbooks.settings import Settings
from tests.conftest import Sandbox
from tests.reliability._faults_helpers import NS, Api, Cluster, Runbooks, audit_diff, pod_crash_params, wait_for, writes
from tests.reliability._faults_procs import PrefectServer, RunnerProc, client_env, kill_pid
from tests.reliability.test_faults_processes import TARGET, crashing  # noqa: F401 - module-scoped: fresh here

pytestmark = [pytest.mark.slow, pytest.mark.integration]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("faults-prefect"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def slot_holder(box: Sandbox, name: str) -> str | None:
    """Who holds the workload's remediation Lease now (None: free or expired), read as the admin."""
    ns, lease_name = name.split("/")
    kube = get_kube(Settings(kubeconfig=box.kubeconfig))
    return holder_of(leases.read(kube, ns, lease_name))


def test_a_live_holder_keeps_its_slot_past_the_lease(sandbox_only: Sandbox) -> None:
    """The lease is short so a dead holder's slot comes back soon; a live holder renews it (every third of the lease)
    and keeps the slot for as long as it needs: held here for three leases while a second run keeps trying to take
    it, which gets it only once the first lets go. Both as the runbooks' ServiceAccount (RBAC enforced)."""
    assert sandbox_only.state_dir is not None
    kube = get_kube(Settings(kubeconfig=account_kubeconfig_path(sandbox_only.state_dir)))
    target = WorkloadRef(namespace=NS, name=f"lease-probe-{int(time.time())}")
    lease = 3
    first = RemediationLock(kube, target, "run-first", lease_seconds=lease)
    second = RemediationLock(kube, target, "run-second", lease_seconds=lease, poll_seconds=0.2)
    tries: list[str | None] = []
    with first:
        since = time.monotonic()
        while time.monotonic() - since < lease * 3:
            tries.append(second.try_acquire())
            time.sleep(0.2)
        held_for = time.monotonic() - since
    assert set(tries) == {"run-first"}, tries  # never free for the other run, though 3 leases went by
    assert first.renewals >= 5 and not first.lost, (first.renewals, first.lost)
    assert second.try_acquire() is None  # released on exit: the other run takes it at once
    second.release()
    print(f"\nlive holder: slot held {held_for:.0f} s with a {lease} s lease, {first.renewals} renewals, "
          f"{len(tries)} attempts by another run, all refused")


def _log_entries(prefect: PrefectServer, run_id: str) -> list[dict[str, Any]]:
    return prefect.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200})


def _logged_at(prefect: PrefectServer, run_id: str, text: str) -> float | None:
    """Epoch seconds of the run's first log line containing `text`."""
    for entry in _log_entries(prefect, run_id):
        if text in entry["message"]:
            return datetime.fromisoformat(entry["timestamp"]).timestamp()
    return None


def test_flow_run_process_killed_mid_run_is_crashed_and_not_repeated(
        prefect: PrefectServer, sandbox_only: Sandbox, crashing: Cluster, tmp_path: Path) -> None:  # noqa: F811
    """The run is killed (by the PID the runner names for it) while it waits, for up to an hour, for the workload
    to be stable after its action: the Runner reports it CRASHED. Its remediation slot stays taken by the dead
    holder until the lease expires; a re-run waits for it, then takes it, reads the cluster afresh and does not
    act again (the workload is healthy, or the guard's cooldown refuses a repeat)."""
    env = client_env(sandbox_only, prefect, tmp_path, K8S_RUNBOOKS_COOLDOWN_SECONDS="900")
    runner = RunnerProc(env, tmp_path)
    runner.start()
    api = Api(sandbox_only.api_url)
    runbooks = Runbooks(sandbox_only, tmp_path)
    runbooks.state_dir = tmp_path / "guard"
    slot = slot_name(NS, TARGET)
    second: str | None = None
    try:
        dep = prefect.get("/deployments/name/pod-crash/pod-crash")

        def create(params: dict[str, Any]) -> str:
            return prefect.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": {"params": params}})["id"]

        before = api.audit()
        # After its action the run waits until the workload has been stable for an hour: a wide kill window.
        first = create(pod_crash_params(TARGET, approval="auto", drill=True, stable_seconds=3600,
                                        recovery_timeout_seconds=3600))
        wait_for(lambda: runbooks.executed(first), 240, "the first run's remediation")
        # Its logs ship in batches: a run killed before a batch leaves would lose them (it acted within 1 s of
        # starting when the machine was idle). The run waits for the hour anyway.
        wait_for(lambda: _logged_at(prefect, first, "holding the remediation slot"), 120, "the first run's logs")
        pid = wait_for(lambda: runner.run_pid(first), 60, "the runner's pid file for the first run")
        assert runner.logged(f"flow run {first} started in process {pid}"), runner.log.read_text()[-3000:]
        assert pid in runner.descendants()
        assert prefect.state(first)["type"] == "RUNNING"
        kill_pid(pid)
        killed_at = time.time()
        held_by_the_dead = slot_holder(sandbox_only, slot)  # renewed every 20 s: >= 40 s of the lease were left
        crashed = wait_for(lambda: prefect.state(first)["type"] in FINAL and prefect.state(first), 120,
                           "the killed run's final state")
        wait_for(lambda: runner.run_pid(first) is None, 60, "the runner to reap the killed process")
        assert runner.logged(f"flow run {first}: process {pid} exited with code -9"), runner.log.read_text()[-3000:]

        second = create(pod_crash_params(TARGET, approval="auto", drill=True))
        waiting_at = wait_for(lambda: _logged_at(prefect, second, "waiting for the remediation slot"), 300,
                              "the re-run to wait for the slot")
        holding_at = wait_for(lambda: _logged_at(prefect, second, "holding the remediation slot"), LEASE_SECONDS + 300,
                              "the re-run to take the slot once the dead holder's lease expired")
        final = wait_for(lambda: prefect.state(second)["type"] in FINAL and prefect.state(second), 420,
                         "the re-run's final state")
        requests = audit_diff(before, api.audit())
        executed = runbooks.executed()
        second_decisions = runbooks.guard_audit(second)
    finally:
        if second is not None and prefect.state(second)["type"] not in FINAL:
            prefect.post(f"/flow_runs/{second}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
        runner.stop()
    assert crashed["type"] == "CRASHED" and "-9" in (crashed.get("message") or ""), crashed
    assert held_by_the_dead == first  # no other run existed yet: the dead run's slot outlived it
    assert [r["flow_run_id"] for r in executed] == [first], executed
    assert sum(writes(requests).values()) == 1, writes(requests)
    assert final["type"] in ("COMPLETED", "FAILED"), final
    # The re-run acted on nothing: either it found nothing to do, or the guard refused the repeat (cooldown).
    assert all(r["decision"] == "refused" and "cooldown" in r["reason"] for r in second_decisions), second_decisions
    assert slot_holder(sandbox_only, slot) is None
    print(f"\nflow-run process {pid} killed: first run {crashed['type']} ({crashed.get('message')}); action "
          f"{executed[0]['action']['kind']} executed once ({sum(writes(requests).values())} write); re-run waited "
          f"{holding_at - waiting_at:.0f} s for the slot ({holding_at - killed_at:.0f} s after the kill, lease "
          f"{LEASE_SECONDS:.0f} s), then {final['type']} ({final.get('message')}); its guard decisions: "
          f"{[(r['action']['kind'], r['decision']) for r in second_decisions]}")
