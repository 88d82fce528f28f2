"""`python -m tests.warm_runner.serve_testflows NAME --flows echo,crash --query-seconds S [--no-nudge] --ready-file F
[--run-pid-dir D]`:
a WarmRunner serving test flows, as `k8s_runbooks_prefect.deploy serve` serves the runbooks."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from prefect.deployments.runner import EntrypointType

from k8s_runbooks_prefect.warm_runner.runner import WarmRunner
from tests.warm_runner.testflows import FLOWS

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--flows", required=True)
    parser.add_argument("--query-seconds", type=float, default=1.0)
    parser.add_argument("--no-nudge", dest="nudge", action="store_false")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--run-pid-dir", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(REPO)
    runner = WarmRunner(name=args.name, query_seconds=args.query_seconds, pause_on_shutdown=False,
                        repo_root=str(REPO), nudge=args.nudge, run_pid_dir=args.run_pid_dir)
    for key in args.flows.split(","):
        flow = FLOWS[key]
        deployment = flow.to_deployment(name="warm-test", entrypoint_type=EntrypointType.MODULE_PATH)
        runner.warm(runner.add_deployment(deployment), f"tests.warm_runner.testflows:{flow.fn.__name__}")
    runner.start_fork_server()
    args.ready_file.write_text(f"{os.getpid()}\n")
    asyncio.run(runner.start())


if __name__ == "__main__":
    main()
