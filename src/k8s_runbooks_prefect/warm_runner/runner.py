"""`WarmRunner`: Prefect's Runner with warm forked runs and an event nudge.

Relies on two Prefect 3.9 Runner internals (pinned `prefect>=3.9,<3.10`): the poller's `_resolve_starter`
(the documented ProcessStarter strategy seam, runner/AGENTS.md) and `_get_and_submit_flow_runs` (one poll
cycle). `tests/warm_runner` fails loudly if either moves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
from prefect.runner import Runner

from k8s_runbooks_prefect.warm_runner import LOGGER_NAME
from k8s_runbooks_prefect.warm_runner.starter import WarmForkStarter, fork_server, remove_stale_run_pids, warm_up

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.events import Event

log = logging.getLogger(LOGGER_NAME)
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
NUDGE_RETRY_MAX_S = 30.0


class WarmRunner(Runner):
    """A Runner whose registered deployments run in forks of a warm fork server.

    `warm(deployment_id, entrypoint)` marks a deployment (added with `add_deployment`) as warm; runs of other
    deployments go through the stock starter. With `nudge=True` a `prefect.flow-run.Scheduled` event for a
    warm deployment triggers a poll at once (the regular poll every `query_seconds` remains the fallback).
    With `run_pid_dir`, each warm run's PID is kept in `<run_pid_dir>/<flow run id>.pid` while it runs.
    """

    def __init__(self, *args: Any, repo_root: str, nudge: bool = True, run_pid_dir: Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if log.level == logging.NOTSET:
            # Prefect's logging config shows only WARNING+ of other libraries; the run-to-PID lines are INFO.
            log.setLevel(logging.INFO)
        self._repo_root = repo_root
        self._run_pid_dir = Path(run_pid_dir) if run_pid_dir is not None else None
        self._nudge_enabled = nudge
        self._warm_entrypoints: dict[UUID, str] = {}
        self._ctx: Any = None
        self._nudge_event: anyio.Event | None = None  # created in the runner's event loop
        self.nudges = 0  # polls triggered by events (observability, tests)

    def warm(self, deployment_id: UUID, entrypoint: str) -> None:
        self._warm_entrypoints[deployment_id] = entrypoint

    def start_fork_server(self, entrypoints: list[str] | None = None, wait: bool = True) -> None:
        """Start the fork server importing the flow modules of `entrypoints` (default: the warm deployments')
        and, with `wait`, block until its imports are done. Starting it before registering the deployments
        overlaps its imports with the registration; call again with `wait=True` before `start`."""
        if self._ctx is None:
            entrypoints = entrypoints if entrypoints is not None else list(self._warm_entrypoints.values())
            self._ctx = fork_server(sorted({e.split(":", 1)[0] for e in entrypoints}), self._repo_root)
        if wait:
            warm_up(self._ctx)

    async def __aenter__(self) -> "WarmRunner":
        await super().__aenter__()
        if self._run_pid_dir is not None:
            self._run_pid_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_run_pids(self._run_pid_dir)
        if self._ctx is None:
            await anyio.to_thread.run_sync(self.start_fork_server)
        poller = self._scheduled_run_poller
        stock_resolver = poller._resolve_starter

        def resolve(flow_run: FlowRun) -> Any:
            entrypoint = self._warm_entrypoints.get(flow_run.deployment_id) if flow_run.deployment_id else None
            if entrypoint is None:
                return stock_resolver(flow_run)
            return WarmForkStarter(
                ctx=self._ctx, entrypoint=entrypoint,
                deployment_name=self._deployment_registry.get_deployment_name(flow_run.deployment_id),
                heartbeat_seconds=self._heartbeat_seconds, control_channel=self._control_channel,
                run_pid_dir=self._run_pid_dir,
            )

        poller._resolve_starter = resolve
        self._nudge_event = anyio.Event()
        if self._nudge_enabled:
            group = anyio.create_task_group()
            await self._exit_stack.enter_async_context(group)
            self._exit_stack.callback(group.cancel_scope.cancel)  # LIFO: cancelled before the group exits
            group.start_soon(self._listen_for_scheduled_runs)
            group.start_soon(self._poll_on_nudge)
        return self

    def _concerns_us(self, event: Event) -> bool:
        for related in event.related:
            if related.role == "deployment":
                try:
                    if UUID(related.id.rsplit(".", 1)[-1]) in self._warm_entrypoints:
                        return True
                except ValueError:
                    continue
        return False

    async def _listen_for_scheduled_runs(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        delay = 1.0
        while not self.stopping:
            try:
                event_filter = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT]))
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    delay = 1.0
                    async for event in subscriber:
                        if self._concerns_us(event) and self._nudge_event is not None:
                            self._nudge_event.set()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - polling still runs; retry the subscription
                log.warning("warm runner: event subscription failed (%s); polling only, retrying in %.0f s", exc, delay)
            await anyio.sleep(delay)
            delay = min(NUDGE_RETRY_MAX_S, delay * 2)

    async def _poll_on_nudge(self) -> None:
        while self._nudge_event is not None:
            await self._nudge_event.wait()
            self._nudge_event = anyio.Event()  # events arriving during this poll trigger one more
            if self.stopping:
                continue
            self.nudges += 1
            try:
                await self._scheduled_run_poller._get_and_submit_flow_runs()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - the regular poll will pick the run up
                log.warning("warm runner: nudged poll failed (%s); the regular poll retries", exc)
