"""The Prefect `ProcessStarter` that forks runs from the warm fork server instead of spawning an interpreter.

Contract (prefect.runner._flow_run_executor.ProcessStarter): hand a `ProcessHandle` to `task_status` before
blocking, block until the process exits. The handle wraps a `multiprocessing` process: Prefect's executor
reads its `exitcode` (non-zero or a signal: the run is reported CRASHED) and its cancellation path signals
its pid (SIGTERM after the control-channel intent, SIGKILL after the grace period).

Which process runs which flow run: a forked run's command line and environment are the fork server's, so
nothing outside the runner could tell. The starter says it: `flow run <id> started in process <pid>` and
`flow run <id>: process <pid> exited with code <n>` on the `k8s_runbooks_prefect.warm_runner` logger (INFO, in the
runner's log), and with a `run_pid_dir` a `<flow run id>.pid` file holding the PID while the process lives
(written before the run is handed to Prefect's executor, removed once the process has exited and been reaped).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings

from k8s_runbooks_prefect.warm_runner import LOGGER_NAME, PRELOAD_ENV, REPO_ROOT_ENV, child

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._control_channel import ControlChannel

PRELOAD_MODULE = "k8s_runbooks_prefect.warm_runner.preload"
log = logging.getLogger(LOGGER_NAME)
_lock = threading.Lock()
_context: Any = None


def fork_server(modules: list[str], repo_root: str) -> Any:
    """The forkserver context, its server started with `modules` preloaded (once per process)."""
    global _context
    with _lock:
        if _context is None:
            # The fork server inherits this environment when it starts: tell the preload what to import.
            os.environ[PRELOAD_ENV] = ",".join(modules)
            os.environ[REPO_ROOT_ENV] = repo_root
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([PRELOAD_MODULE])
            multiprocessing.forkserver.ensure_running()
            _context = ctx
        return _context


def _noop() -> None:
    return None


def run_pid_path(run_pid_dir: Path, flow_run_id: object) -> Path:
    return Path(run_pid_dir) / f"{flow_run_id}.pid"


def read_run_pid(run_pid_dir: Path, flow_run_id: object) -> int | None:
    """The PID of the process running `flow_run_id` under a warm runner writing to `run_pid_dir`, if it runs."""
    try:
        return int(run_pid_path(run_pid_dir, flow_run_id).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def remove_stale_run_pids(run_pid_dir: Path) -> None:
    """Drop PID files whose process is gone (left by a runner that was killed before it could remove them)."""
    for path in Path(run_pid_dir).glob("*.pid"):
        try:
            os.kill(int(path.read_text().split()[0]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except (OSError, ValueError, IndexError):
            continue


def warm_up(ctx: Any) -> None:
    """Block until the fork server has finished its imports (its first fork waits for them)."""
    proc = ctx.Process(target=_noop, name="warm-runner-warm-up")
    proc.start()
    proc.join()


class WarmForkStarter:
    def __init__(self, *, ctx: Any, entrypoint: str, deployment_name: str | None,
                 heartbeat_seconds: float | None = None, control_channel: ControlChannel | None = None,
                 run_pid_dir: Path | None = None) -> None:
        self._ctx = ctx
        self._run_pid_dir = run_pid_dir
        self._entrypoint = entrypoint
        self._deployment_name = deployment_name
        self._heartbeat_seconds = heartbeat_seconds
        self._control_channel = control_channel

    def _env(self, flow_run: FlowRun) -> tuple[dict[str, str | None], bool]:
        """What `EngineCommandStarter` adds to a stock engine process's environment."""
        env: dict[str, str | None] = dict(get_current_settings().to_environment_variables(exclude_unset=True))
        env.update({
            "PREFECT__FLOW_RUN_ID": str(flow_run.id),
            "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            "PREFECT__DEPLOYMENT_NAME": self._deployment_name,
        })
        if self._heartbeat_seconds is not None:
            env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(int(self._heartbeat_seconds))
        registered = False
        if self._control_channel is not None:
            try:
                port, token = self._control_channel.register(flow_run.id)
            except RuntimeError:
                pass  # no loopback listener: cancellation falls back to kill-only (as for stock runs)
            else:
                env["PREFECT__CONTROL_PORT"] = str(port)
                env["PREFECT__CONTROL_TOKEN"] = token
                registered = True
        return env, registered

    async def start(self, flow_run: FlowRun,
                    task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED) -> None:
        env, registered = self._env(flow_run)
        process = self._ctx.Process(target=child.run, args=(str(flow_run.id), self._entrypoint, env),
                                    name=f"flow-run-{flow_run.id}")
        handed_off = False
        pid_file: Path | None = None
        try:
            await anyio.to_thread.run_sync(process.start)  # a few ms: a request to the fork server
            log.info("flow run %s started in process %s", flow_run.id, process.pid)
            pid_file = self._write_pid_file(flow_run.id, process.pid)
            task_status.started(ProcessHandle(process))
            handed_off = True
            await anyio.to_thread.run_sync(process.join)
            log.info("flow run %s: process %s exited with code %s", flow_run.id, process.pid, process.exitcode)
        except BaseException:
            if registered and not handed_off and self._control_channel is not None:
                self._control_channel.unregister(flow_run.id)
            raise
        finally:
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)

    def _write_pid_file(self, flow_run_id: object, pid: int | None) -> Path | None:
        if self._run_pid_dir is None or pid is None:
            return None
        path = run_pid_path(self._run_pid_dir, flow_run_id)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(f"{pid}\n")
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError as exc:  # the log line above still names the process; the run must not fail for this
            log.warning("flow run %s: could not write %s (%s)", flow_run_id, path, exc)
            return None
        return path
