"""The body of a forked run: what `python -m prefect.engine` does once its imports are done.

Runs in a fresh fork of the warm fork server, so the imports are already in memory. The per-run
environment (control-channel port and token, deployment name, the runner's Prefect settings) is applied
first, then the run goes through Prefect's engine inside `handle_engine_signals`, whose exit codes the
runner's executor interprets exactly as for a stock `prefect.engine` process (non-zero: CRASHED).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any
from uuid import UUID


def _load_flow(entrypoint: str) -> Any:
    module, func = entrypoint.split(":", 1)
    return getattr(importlib.import_module(module), func)


def run(flow_run_id: str, entrypoint: str, env: dict[str, str | None]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it; a run must not
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from prefect._internal.control_listener import configure_from_env

    configure_from_env()  # consumes the control-channel port/token before any flow code runs
    from prefect._internal.metrics import RunMetrics
    from prefect.context import SettingsContext, get_settings_context
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
    from prefect.settings import Settings

    # Settings were read when the fork server imported Prefect: re-read them with this run's environment.
    current = get_settings_context()
    with SettingsContext(profile=current.profile, settings=Settings()):
        with handle_engine_signals(UUID(flow_run_id)):
            flow_run = load_flow_run(UUID(flow_run_id))  # fresh state, as the stock engine reads it
            run_logger = flow_run_logger(flow_run=flow_run)
            try:
                flow = _load_flow(entrypoint)
            except Exception:
                run_logger.error("Unexpected exception encountered when trying to load flow", exc_info=True)
                raise
            with RunMetrics(flow_run, flow):
                result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)
                _drive_run_flow_result(flow, result)
    sys.stdout.flush()
