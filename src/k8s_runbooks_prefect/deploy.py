"""Prefect deployments of the runbooks, and the runner that serves them with prompt starts.

One deployment per runbook (and per drill), named like its flow, so alert routes say `pod-crash/pod-crash`.
Each deployment gets the parameter schema of the flow's pydantic model (a typed form in the UI), a
description taken from its Markdown runbook, tags, and for drills a cron schedule that is paused
unless `--drills-active` (the sandbox) asks otherwise.

Two ways to register them:
- `prefect --no-prompt deploy --all` with `prefect.yaml` (users: a process work pool and `prefect worker start`);
- `python -m k8s_runbooks_prefect.deploy serve` (the sandbox): one process registers every deployment whose flow
  module exists and serves them, polling every `--query-seconds`. `--runner warm` (default,
  K8S_RUNBOOKS_RUNNER_MODE) runs them as forks of a pre-imported fork server and polls at once on a
  `prefect.flow-run.Scheduled` event (see `warm_runner/`); `--runner stock` is Prefect's `Runner`, which
  spawns `python -m prefect.engine` per run (BENCHMARKS.md, section 1, compares them). The warm runner logs
  `flow run <id> started in process <pid>`; `--run-pid-dir DIR` also keeps `DIR/<flow run id>.pid` per live run.

Flows are referenced by module entrypoint (`flows.pod_crash:pod_crash`) and loaded only when serving, so this
Prefect-free core never imports `flows/` at import time. The process must run from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.errors import ConfigError, RunbookError
from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir
from k8s_runbooks.settings import Settings

REPO_ROOT = runbooks_dir().parent
READY_FILE_ENV = "K8S_RUNBOOKS_RUNNER_READY_FILE"
DEFAULT_QUERY_SECONDS = 1.0  # 0.25 s saves ~0.2 s per start but multiplies SQLite writers' lock contention
RUNNER_NAME = "k8s-runbooks"
LOCAL_WORK_POOL = "k8s-runbooks-local"
RunnerMode = Literal["warm", "stock"]
FAMILY_KINDS = tuple(CLUSTER_FAULTS)


@dataclass(frozen=True)
class DeploymentSpec:
    name: str  # deployment name; the flow has the same name
    entrypoint: str  # module:function, imported from the repository root (as prefect.yaml says too)
    runbook: str | None  # runbooks/<file>.md the description comes from
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)  # defaults stored on the deployment
    cron: str | None = None  # drills only
    drill: bool = False
    flow: str = ""  # the flow's name when several deployments share one flow (default: `name`)
    sandbox_schedule: bool = True  # False: the schedule stays paused even in the sandbox (--drills-active)

    @property
    def flow_name(self) -> str:
        return self.flow or self.name

    @property
    def flow_file(self) -> Path:
        return REPO_ROOT / (self.entrypoint.split(":", 1)[0].replace(".", "/") + ".py")

    @property
    def available(self) -> bool:
        return self.flow_file.exists()


SPECS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec("pod-crash", "flows.pod_crash:pod_crash", "pod-crash.md", ("runbook", "pods", "crash")),
    DeploymentSpec("high-latency", "flows.high_latency:high_latency", "high-latency.md", ("runbook", "latency")),
    DeploymentSpec("incident-response", "flows.incident_response:incident_response", "incident-response-plan.md",
                   ("runbook", "incident")),
    # Drills break the sandbox's demo shop on purpose and score the response; outside the sandbox the
    # schedules are registered paused (point the parameters at a namespace labelled for drills first).
    DeploymentSpec("drill-pod-crash", "flows.drills:drill_pod_crash", "drill-pod-crash.md", ("drill", "pods", "crash"),
                   parameters={"params": {"namespace": "shop", "deployment": "payments"}}, cron="0 3 * * 1", drill=True),
    DeploymentSpec("drill-latency", "flows.drills:drill_latency", "drill-latency.md", ("drill", "latency"),
                   parameters={"params": {"namespace": "shop", "deployment": "checkout"}}, cron="0 3 * * 3", drill=True),
    # One deployment of the fault-family drill per family (flow drill-fault-family): weekly, Tuesdays from 04:00
    # UTC a quarter of an hour apart, paused everywhere until someone resumes them (deployments/README.md).
    *(DeploymentSpec(f"drill-{kind}", "flows.drills:drill_fault_family", "drill-fault-family.md", ("drill", "family", kind),
                     parameters={"params": {"namespace": "shop", "deployment": "checkout", "fault": {"kind": kind}}},
                     cron=f"{15 * (i % 4)} {4 + i // 4} * * 2", drill=True, flow="drill-fault-family", sandbox_schedule=False)
      for i, kind in enumerate(FAMILY_KINDS)),
)


def available_specs(specs: tuple[DeploymentSpec, ...] = SPECS) -> list[DeploymentSpec]:
    """The specs whose flow module exists in this checkout (others land later)."""
    return [s for s in specs if s.available]


def description(spec: DeploymentSpec) -> str:
    """Title, objective and the numbered steps of the Markdown runbook (the UI shows this as Markdown)."""
    path = runbooks_dir() / spec.runbook if spec.runbook else None
    if path is None or not path.exists():
        return f"Runbook flow `{spec.name}`" + (" (scheduled drill)" if spec.drill else "")
    book = load_runbook(path)
    lines = [f"**{book.title}**", ""]
    if book.objective:
        lines += [book.objective, ""]
    lines += [f"{s.number}. {s.title}" for s in book.steps]
    lines += ["", f"Runbook: `runbooks/{spec.runbook}`" + (" — scheduled drill" if spec.drill else "")]
    return "\n".join(lines)


def load_flow(spec: DeploymentSpec) -> Any:
    """Import the flow by module name (`flows.pod_crash`), as the engine will: importing a file by path
    next to a module import of the same file would run its step registrations twice."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    module, func = spec.entrypoint.split(":", 1)
    return getattr(importlib.import_module(module), func)


def runner_deployment(spec: DeploymentSpec, drills_active: bool) -> Any:
    from prefect.deployments.runner import EntrypointType

    flow = load_flow(spec)
    if flow.name != spec.flow_name:
        raise ConfigError(f"{spec.entrypoint} defines flow {flow.name!r}, expected {spec.flow_name!r}",
                          hint="deployments are named after their flow so alert routes read <flow>/<flow>")
    active = drills_active and spec.sandbox_schedule
    return flow.to_deployment(
        name=spec.name, description=description(spec), tags=list(spec.tags), parameters=spec.parameters or None,
        cron=spec.cron, paused=(not active) if spec.cron else None, enforce_parameter_schema=True,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def make_runner(mode: RunnerMode, query_seconds: float, nudge: bool, name: str = RUNNER_NAME,
                run_pid_dir: Path | None = None) -> Any:
    if mode == "stock":
        from prefect.runner import Runner

        return Runner(name=name, query_seconds=query_seconds, pause_on_shutdown=False)
    if mode != "warm":
        raise ConfigError(f"unknown runner mode {mode!r}", hint="K8S_RUNBOOKS_RUNNER_MODE is warm or stock")
    from k8s_runbooks_prefect.warm_runner.runner import WarmRunner

    return WarmRunner(name=name, query_seconds=query_seconds, pause_on_shutdown=False,
                      repo_root=str(REPO_ROOT), nudge=nudge, run_pid_dir=run_pid_dir)


def serve(query_seconds: float = DEFAULT_QUERY_SECONDS, drills_active: bool = False,
          ready_file: Path | None = None, mode: RunnerMode = "warm", nudge: bool = True,
          name: str = RUNNER_NAME, run_pid_dir: Path | None = None) -> None:
    """Register every available deployment and run them as they are created, until SIGTERM."""
    if run_pid_dir is not None:
        run_pid_dir = Path(run_pid_dir).resolve()  # before the chdir below
    os.chdir(REPO_ROOT)  # entrypoints are relative to the repository root
    runner = make_runner(mode, query_seconds, nudge, name, run_pid_dir)
    specs = available_specs()
    if not specs:
        raise ConfigError(f"no runbook flow module found under {REPO_ROOT / 'flows'}")
    if mode == "warm":  # its imports overlap the registrations below
        runner.start_fork_server([s.entrypoint for s in specs], wait=False)
    served = []
    for spec in specs:
        try:
            deployment = runner_deployment(spec, drills_active)
        except Exception as exc:  # noqa: BLE001 - one broken flow module must not take the other runbooks down
            print(f"error: {spec.name}: {spec.entrypoint} could not be loaded, not served: {exc!r}", file=sys.stderr, flush=True)
            continue
        deployment_id = runner.add_deployment(deployment)
        if mode == "warm":
            runner.warm(deployment_id, spec.entrypoint)
        served.append(spec)
    if not served:
        raise ConfigError("no runbook flow could be loaded; see the errors above")
    if mode == "warm":
        runner.start_fork_server()  # the ready file below means "runs start warm"
    names = ", ".join(f"{s.flow_name}/{s.name}" for s in served)
    how = f"{mode} runner" + (", event nudge" if mode == "warm" and nudge else "")
    print(f"registered {names}; {how}, polling every {query_seconds:g} s", flush=True)
    if ready_file is not None:
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.write_text(f"{os.getpid()}\n{names}\n")
    try:
        asyncio.run(runner.start())  # Runner installs its own SIGTERM handler: graceful stop, runs cancelled
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s_runbooks_prefect.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="register the deployments and serve them (until SIGTERM)")
    defaults = Settings()
    run.add_argument("--query-seconds", type=float, default=defaults.runner_query_seconds)
    run.add_argument("--runner", choices=["warm", "stock"], default=defaults.runner_mode,
                     help="warm: forks of a pre-imported fork server; stock: Prefect's Runner (a new interpreter per run)")
    run.add_argument("--no-nudge", dest="nudge", action="store_false", default=defaults.runner_event_nudge,
                     help="warm runner: poll only, ignore prefect.flow-run.Scheduled events")
    run.add_argument("--name", default=RUNNER_NAME, help="runner name (two runners on one server need two names)")
    run.add_argument("--drills-active", action="store_true", help="activate drill schedules (sandbox only)")
    run.add_argument("--ready-file", type=Path, default=os.environ.get(READY_FILE_ENV) or None)
    run.add_argument("--run-pid-dir", type=Path, default=defaults.runner_run_pid_dir,
                     help="warm runner: keep <flow run id>.pid here while each run's process lives")
    sub.add_parser("list", help="print the deployments this checkout defines")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for spec in SPECS:
                print(f"{spec.flow_name}/{spec.name}\t{spec.entrypoint}\t{'available' if spec.available else 'flow module missing'}")
            return 0
        serve(args.query_seconds, args.drills_active, args.ready_file, args.runner, args.nudge, args.name,
              args.run_pid_dir)
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
