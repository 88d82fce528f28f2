"""The warm runner keeps Prefect's semantics: one execution per run with two pools competing, a killed run is
CRASHED and the pool goes on, cancellation stops a running run, parameters and logs arrive, and a run is started
by the Scheduled-event nudge alone. It names the process of each run (log line and PID file). No timing
assertions (bench/alert_to_running.py measures)."""

from __future__ import annotations

import os
import re
import signal

import psutil
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling

from k8s_runbooks_prefect.warm_runner.starter import read_run_pid
from tests.warm_runner.conftest import Runners, create_run, run_logs, wait_final, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def states_of(client: SyncPrefectClient, run_id) -> list[StateType]:  # noqa: ANN001
    return [s.type for s in client.read_flow_run_states(run_id)]


def test_each_run_executes_once_with_two_runners_polling(client: SyncPrefectClient, runners: Runners) -> None:
    ids = {n: create_run(client, "warm-test-echo", {"message": f"hello-{n}", "n": n}) for n in range(8)}
    executed_by = set()
    for n, run_id in ids.items():
        run = wait_final(client, run_id)
        assert run.state.type == StateType.COMPLETED, run.state
        assert states_of(client, run_id).count(StateType.RUNNING) == 1
        # Parameters arrived, and exactly one process logged the run.
        lines = wait_for(f"the logs of run {n}", lambda: [m for m in run_logs(client, run_id) if m.startswith("echo ")])
        assert len(lines) == 1, lines
        match = re.fullmatch(rf"echo hello-{n} n={n} by (a|b) pid=\d+", lines[0])
        assert match, lines[0]
        executed_by.add(match.group(1))
    assert executed_by <= {"a", "b"}


def test_a_killed_run_is_crashed_and_the_pool_goes_on(client: SyncPrefectClient, runners: Runners) -> None:
    crashed = wait_final(client, create_run(client, "warm-test-crash"))
    assert crashed.state.type == StateType.CRASHED, crashed.state
    assert "-9" in (crashed.state.message or "") or "SIGKILL" in (crashed.state.message or ""), crashed.state.message
    after = wait_final(client, create_run(client, "warm-test-echo", {"message": "after-crash", "n": 99}))
    assert after.state.type == StateType.COMPLETED, after.state
    assert all(proc.poll() is None for proc in runners.procs.values()), "a runner died with the run"


def test_cancelling_a_running_run_stops_its_process(client: SyncPrefectClient, runners: Runners) -> None:
    run_id = create_run(client, "warm-test-sleeper", {"seconds": 600})
    wait_for("the sleeper to run", lambda: client.read_flow_run(run_id).state.type == StateType.RUNNING)
    line = wait_for("the sleeper's pid", lambda: [m for m in run_logs(client, run_id) if m.startswith("sleeping pid=")])
    pid = int(line[0].split("=", 1)[1])
    client.set_flow_run_state(run_id, Cancelling(), force=True)  # what the UI's Cancel button does
    run = wait_final(client, run_id)
    assert run.state.type == StateType.CANCELLED, run.state
    wait_for(f"process {pid} to exit", lambda: not psutil.pid_exists(pid) or
             psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


def test_the_scheduled_event_alone_starts_a_run(client: SyncPrefectClient, runners: Runners) -> None:
    """Runner `a` polls once an hour (its one poll was at start-up) and alone serves nudge-only."""
    run = wait_final(client, create_run(client, "warm-test-nudge-only", {"message": "ping"}))
    assert run.state.type == StateType.COMPLETED, run.state
    # Logs ship in the background: the final state can reach the server before the run's log lines do.
    lines = wait_for("the run's log line", lambda: [m for m in run_logs(client, run.id) if m.startswith("nudged ")], 60)
    assert lines == ["nudged ping by a"], lines


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_runner_names_each_runs_process_and_killing_it_crashes_only_that_run(
        client: SyncPrefectClient, runners: Runners) -> None:
    """Runner `b` (the only one serving the sleeper) logs `flow run <id> started in process <pid>` and keeps
    `<id>.pid` while the process lives: that PID is the one the flow itself reports, SIGKILL on it crashes that run
    and no other, and the file goes once the process is gone."""
    pid_dir, log = runners.run_pid_dirs["b"], runners.logs["b"]
    victim = create_run(client, "warm-test-sleeper", {"seconds": 600})
    bystander = create_run(client, "warm-test-sleeper", {"seconds": 600})
    try:
        for run_id in (victim, bystander):
            wait_for(f"run {run_id} to run", lambda r=run_id: client.read_flow_run(r).state.type == StateType.RUNNING)
        pid = wait_for("the victim's pid file", lambda: read_run_pid(pid_dir, victim))
        other_pid = wait_for("the bystander's pid file", lambda: read_run_pid(pid_dir, bystander))
        assert pid != other_pid and _alive(pid) and _alive(other_pid)
        assert pid in {c.pid for c in psutil.Process(runners.procs["b"].pid).children(recursive=True)}
        flow_says = wait_for("the victim's own pid", lambda: [m for m in run_logs(client, victim) if m.startswith("sleeping pid=")])
        assert flow_says == [f"sleeping pid={pid}"], flow_says
        wait_for("the runner's log line", lambda: f"flow run {victim} started in process {pid}" in log.read_text(), 30)

        os.kill(pid, signal.SIGKILL)
        run = wait_final(client, victim)
        assert run.state.type == StateType.CRASHED and "-9" in (run.state.message or ""), run.state
        wait_for("the victim's pid file to go", lambda: read_run_pid(pid_dir, victim) is None, 60)
        wait_for("the exit line", lambda: f"flow run {victim}: process {pid} exited with code -9" in log.read_text(), 30)
        assert client.read_flow_run(bystander).state.type == StateType.RUNNING
        assert read_run_pid(pid_dir, bystander) == other_pid and _alive(other_pid)
    finally:
        client.set_flow_run_state(bystander, Cancelling(), force=True)
    assert wait_final(client, bystander).state.type == StateType.CANCELLED
    wait_for("the bystander's pid file to go", lambda: read_run_pid(pid_dir, bystander) is None, 60)
