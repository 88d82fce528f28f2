"""Two warm runners on the session sandbox's Prefect server, serving the test flows of `testflows.py`:

- `a`: event nudge, polling only once an hour, so a run it starts after start-up was started by the nudge;
  serves echo, crash and nudge_only;
- `b`: no nudge, polling every second; serves echo, crash and sleeper.
Both serve echo and crash, so their runs are contested by two pools.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import REPO, Sandbox
from tests.warm_runner.testflows import RUNNER_ENV

RUNNERS = {
    "a": ["--flows", "echo,crash,nudge_only", "--query-seconds", "3600"],
    "b": ["--flows", "echo,crash,sleeper", "--query-seconds", "1", "--no-nudge"],
}


@dataclass
class Runners:
    api_url: str
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    run_pid_dirs: dict[str, Path]  # <flow run id>.pid per live run (the runner's --run-pid-dir)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def runners(sandbox_only: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runners]:
    if not sandbox_only.prefect_api_url:
        pytest.skip("the sandbox runs without Prefect")
    work = tmp_path_factory.mktemp("warm-runners")
    env = {k: v for k, v in sandbox_only.env.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=sandbox_only.prefect_api_url, PREFECT_HOME=str(work / "prefect"),
               DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    run_pid_dirs = {name: work / f"{name}-runs" for name in RUNNERS}
    try:
        for name, extra in RUNNERS.items():
            logs[name] = work / f"runner-{name}.log"
            with open(logs[name], "wb") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "tests.warm_runner.serve_testflows", f"warm-test-{name}", *extra,
                     "--ready-file", str(work / f"{name}.ready"), "--run-pid-dir", str(run_pid_dirs[name])],
                    cwd=REPO, env={**env, RUNNER_ENV: name}, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # its fork server and forked runs share its process group
                )
        deadline = time.monotonic() + 240
        for name, proc in procs.items():
            while not (work / f"{name}.ready").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"warm runner {name} did not start:\n{logs[name].read_text()[-3000:]}")
                time.sleep(0.5)
        yield Runners(sandbox_only.prefect_api_url, procs, logs, run_pid_dirs)
    finally:
        for proc in procs.values():
            _stop(proc)


@pytest.fixture
def client(runners: Runners) -> Iterator[SyncPrefectClient]:
    with temporary_settings(updates={PREFECT_API_URL: runners.api_url}):
        with get_client(sync_client=True) as c:
            yield c


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 180, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def wait_final(client: SyncPrefectClient, run_id: UUID, timeout_s: float = 180) -> FlowRun:
    def final() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return wait_for(f"flow run {run_id} to finish", final, timeout_s)


def create_run(client: SyncPrefectClient, deployment: str, parameters: dict[str, Any] | None = None) -> UUID:
    dep = client.read_deployment_by_name(f"{deployment}/warm-test")
    return client.create_flow_run_from_deployment(dep.id, parameters=parameters or {}).id


def run_logs(client: SyncPrefectClient, run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    return [log.message for log in logs]
