"""Run the Prefect UI browser scenario (tests/ui/scenario.py) N times in a row against a sandbox and count
failures: no retried clicks, any HTTP 5xx seen by the browser fails the round.

    .venv/bin/python bench/ui_reliability.py --state-dir .sandbox [--rounds 30]

Starts nothing: run `k8s-runbooks sandbox up` first (it starts Prefect with the sandbox's SQLite settings,
the runner and the receiver). Creates namespace drill-ui with one Deployment `web` for the custom runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k8s_runbooks_prefect import deploy  # noqa: E402
from k8s_runbooks.sandbox import demo_workload, supervisor  # noqa: E402
from k8s_runbooks.sandbox.settings import SandboxSettings  # noqa: E402
from tests.ui.scenario import ScenarioFailed, browser, probe_env, run_scenario  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--shots", type=Path, default=Path(".bench/ui-failures"), help="screenshots of failed rounds")
    args = parser.parse_args()
    cfg = supervisor.resolve_config(SandboxSettings(), args.state_dir)
    api = f"http://127.0.0.1:{cfg.ports.prefect}/api"
    ui = api.removesuffix("/api")
    demo_workload.ensure_workload(cfg.kubeconfig, "drill-ui", {"web": 1})
    names = [s.name for s in deploy.available_specs()]
    failures: list[str] = []
    started = time.monotonic()
    with browser() as b:
        for i in range(1, args.rounds + 1):
            try:
                result = run_scenario(b, ui, api, "drill-ui", "web", names, probe_env(api), shots=args.shots)
                steps = ", ".join(f"{k} {v:.0f}s" for k, v in result.step_seconds.items())
                print(f"round {i:3}: ok in {result.seconds:.1f}s (load {os.getloadavg()[0]:.1f}): {steps}", flush=True)
            except (ScenarioFailed, Exception) as exc:  # noqa: BLE001 - counted and reported, the bench goes on
                failures.append(f"round {i}: {exc}")
                print(f"round {i:3}: FAILED (load {os.getloadavg()[0]:.1f}) {str(exc)[:600]}", flush=True)
    load = os.getloadavg()
    print(f"{args.rounds - len(failures)}/{args.rounds} rounds passed in {time.monotonic() - started:.0f}s; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on {os.cpu_count()} cores")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
