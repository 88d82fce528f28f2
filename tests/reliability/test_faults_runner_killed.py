"""A runbook's flow-run process killed mid-run under the Runner: CRASHED, and its remediation never repeated.

Its own module (own private Prefect server, a freshly injected crash): after the receiver and outage tests in
test_faults_processes.py, the first run here did not act within 240 s in CI, while alone it always did.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Sandbox
from tests.reliability._faults_helpers import Api, Cluster, Runbooks, audit_diff, pod_crash_params, wait_for, writes
from tests.reliability._faults_procs import PrefectServer, RunnerProc, client_env, kill_pid
from tests.reliability.test_faults_processes import crashing, prefect  # noqa: F401 - module-scoped: fresh here

pytestmark = [
    pytest.mark.slow, pytest.mark.integration,
    # Known gap (issue 8 note): with the warm runner, a run's process is not always found among the Runner's
    # descendants in time to kill it mid-run (the run finished first: COMPLETED, nothing killed), so this test
    # sometimes cannot produce its fault. Needs a run-to-PID lookup from the fork server; until then it is
    # skipped rather than left flaky.
    pytest.mark.skip(reason="needs a run-to-PID lookup from the warm runner's fork server to kill a run reliably"),
]
TARGET = "payments"


def test_flow_run_process_killed_mid_run_is_crashed_and_not_repeated(
        prefect: PrefectServer, sandbox_only: Sandbox, crashing: Cluster, tmp_path: Path) -> None:
    """The killed run is reported CRASHED by the Runner. Its remediation slot (a global concurrency limit) stays
    taken until the lease of the dead holder expires (flows/concurrency.py, 300 s): a re-run waits for it
    instead of acting on evidence the first run's action is still changing — so nothing is done twice."""
    env = client_env(sandbox_only, prefect, tmp_path, K8S_RUNBOOKS_COOLDOWN_SECONDS="300")
    # The storm and outage tests leave their dispatched runs Scheduled (no runner served them); a runner started
    # now would run those 70 pod-crash runs first and the first run here would queue behind them for the slot.
    while prefect.delete_waiting_runs():
        pass
    runner = RunnerProc(env, tmp_path)
    runner.start()
    api = Api(sandbox_only.api_url)
    runbooks = Runbooks(sandbox_only, tmp_path)
    runbooks.state_dir = tmp_path / "guard"

    def logs(run_id: str) -> str:
        found = prefect.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        return "\n".join(entry["message"] for entry in found)

    try:
        dep = prefect.get("/deployments/name/pod-crash/pod-crash")
        params = {"params": pod_crash_params(TARGET, approval="auto", drill=True)}
        before, since = api.audit(), time.time()
        first = prefect.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": params})["id"]
        wait_for(lambda: runbooks.executed(first), 240, "the first run's remediation")
        victims = wait_for(lambda: runner.processes_since(since), 30, "the first run's process")
        for p in victims:
            kill_pid(p.pid)
        crashed = wait_for(lambda: prefect.state(first)["type"] in ("CRASHED", "FAILED", "COMPLETED") and prefect.state(first),
                           120, "the killed run's final state")
        second = prefect.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": params})["id"]
        wait_for(lambda: "waiting for the remediation slot" in logs(second), 180, "the re-run to wait for the slot")
        time.sleep(15)  # the re-run keeps waiting: it must neither take the slot nor act
        second_logs = logs(second)
        requests = audit_diff(before, api.audit())
        executed = runbooks.executed()
        prefect.post(f"/flow_runs/{second}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
    finally:
        runner.stop()
    assert crashed["type"] == "CRASHED" and "-9" in (crashed.get("message") or ""), crashed
    assert [r["flow_run_id"] for r in executed] == [first], executed
    assert sum(writes(requests).values()) == 1, writes(requests)
    assert "holding the remediation slot" not in second_logs, second_logs
    print(f"\nflow-run process killed: first run {crashed['type']} ({crashed.get('message')}); action "
          f"{executed[0]['action']['kind']} executed once; the re-run waits for the dead holder's slot lease")
