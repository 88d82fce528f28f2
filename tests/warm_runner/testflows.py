"""Small flows the warm-runner tests serve: they log, crash, sleep; `RUNNER_ENV` names the runner that ran them
(the fork server inherits the runner process's environment)."""

from __future__ import annotations

import os
import signal
import time

from prefect import flow, get_run_logger

RUNNER_ENV = "WARM_TEST_RUNNER"


@flow(name="warm-test-echo")
def echo(message: str, n: int) -> int:
    get_run_logger().info("echo %s n=%d by %s pid=%d", message, n, os.environ.get(RUNNER_ENV), os.getpid())
    return n


@flow(name="warm-test-crash")
def crash() -> None:
    get_run_logger().info("about to die pid=%d", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@flow(name="warm-test-sleeper")
def sleeper(seconds: float) -> None:
    get_run_logger().info("sleeping pid=%d", os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)


@flow(name="warm-test-nudge-only")
def nudge_only(message: str) -> str:
    get_run_logger().info("nudged %s by %s", message, os.environ.get(RUNNER_ENV))
    return message


FLOWS = {"echo": echo, "crash": crash, "sleeper": sleeper, "nudge_only": nudge_only}
