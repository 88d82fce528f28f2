"""Created → RUNNING latency of deployment runs on the sandbox runner (or any worker).

    PREFECT_API_URL=... python bench/start_latency.py [--deployment pod-crash/pod-crash] [--runs 5]

Creates runs with a dry-run parameter set on a namespace that does not exist (the run fails fast after
starting; only the start matters) and reports created→RUNNING from the server's own timestamps.
A quick probe of whatever runner serves the sandbox (warm or stock, K8S_RUNBOOKS_RUNNER_MODE); the published
comparison, from the alert's acceptance and with its own server and runners, is bench/alert_to_running.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

from prefect import get_client
from prefect.deployments import run_deployment


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployment", default="pod-crash/pod-crash")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    params = {"params": {"namespace": "bench-none", "deployment": "bench", "approval": "dry-run"}}
    figures = []
    with get_client(sync_client=True) as client:
        for _ in range(args.runs):
            run = run_deployment(args.deployment, parameters=params, timeout=0)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                run = client.read_flow_run(run.id)
                if run.start_time is not None:
                    break
                time.sleep(0.1)
            if run.start_time is None:
                print(f"{run.id}: not started within 60 s")
                continue
            seconds = (run.start_time - run.created).total_seconds()
            figures.append(seconds)
            print(f"{run.id}: created→RUNNING {seconds:.2f} s")
            time.sleep(1.5)
    if figures:
        print(f"median {statistics.median(figures):.2f} s, min {min(figures):.2f} s, max {max(figures):.2f} s over {len(figures)} runs")


if __name__ == "__main__":
    main()
