"""The Prefect `ProcessStarter` that forks runs from the warm fork server instead of spawning an interpreter.

Contract (prefect.runner._flow_run_executor.ProcessStarter): hand a `ProcessHandle` to `task_status` before
blocking, block until the process exits. The handle wraps a `multiprocessing` process: Prefect's executor
reads its `exitcode` (non-zero or a signal: the run is reported CRASHED) and its cancellation path signals
its pid (SIGTERM after the control-channel intent, SIGKILL after the grace period).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings

from k8s_runbooks.warm_runner import child
from k8s_runbooks.warm_runner import PRELOAD_ENV, REPO_ROOT_ENV

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._control_channel import ControlChannel

PRELOAD_MODULE = "k8s_runbooks.warm_runner.preload"
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


def warm_up(ctx: Any) -> None:
    """Block until the fork server has finished its imports (its first fork waits for them)."""
    proc = ctx.Process(target=_noop, name="warm-runner-warm-up")
    proc.start()
    proc.join()


class WarmForkStarter:
    def __init__(self, *, ctx: Any, entrypoint: str, deployment_name: str | None,
                 heartbeat_seconds: float | None = None, control_channel: ControlChannel | None = None) -> None:
        self._ctx = ctx
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
        try:
            await anyio.to_thread.run_sync(process.start)  # a few ms: a request to the fork server
            task_status.started(ProcessHandle(process))
            handed_off = True
            await anyio.to_thread.run_sync(process.join)
        except BaseException:
            if registered and not handed_off and self._control_channel is not None:
                self._control_channel.unregister(flow_run.id)
            raise
