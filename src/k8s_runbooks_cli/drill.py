"""`k8s-runbooks drill pod-crash|latency|family`: run a failure drill now; `drill schedule`: turn the scheduled ones
on or off (they run as deployments)."""

from __future__ import annotations

import json
from typing import Literal, Optional

import typer
from rich.console import Console

from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.model import DrillParams, FaultSpec
from k8s_runbooks.drills.report import scorecard_document
from k8s_runbooks.errors import InvalidInput

drill_app = typer.Typer(help="Failure drills: inject a fault, score the response, always roll back.", no_args_is_help=True)
console = Console()


def _params(namespace: str, deployment: str, dry_run: bool, approval: str, response: str, fault: str | None,
            value: str | None) -> DrillParams:
    try:
        return DrillParams(namespace=namespace, deployment=deployment, dry_run=dry_run, approval=approval,  # type: ignore[arg-type]
                           response=response,  # type: ignore[arg-type]
                           fault=FaultSpec(kind=fault, value=value) if fault else None)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(f"invalid drill parameters: {exc}".splitlines()[0]) from None


def _run(scenario: Literal["pod-crash", "latency", "family"], params: DrillParams, as_json: bool = False) -> None:
    from rich.markdown import Markdown  # markdown-it: only for the commands that print Markdown

    from flows.drills import drill_fault_family, drill_latency, drill_pod_crash, plan_markdown, scorecard_of

    if not as_json:
        console.print(Markdown(plan_markdown(scenario, params)))
    if params.dry_run:
        console.print("[bold]dry run[/]: checking guardrails and steady state only; nothing is injected")
    fn = {"pod-crash": drill_pod_crash, "latency": drill_latency, "family": drill_fault_family}[scenario]
    state = fn(params, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    card = scorecard_of(run_id)
    if card is None:
        console.print(f"drill run {run_id} ended {state.name}: {state.message or ''} (no scorecard)")
        raise typer.Exit(1)
    if as_json:  # one line for scripts (make bench): the run and its scorecard
        print(json.dumps({"flow_run_id": run_id, "state": state.type.value, "scorecard": json.loads(card.model_dump_json())}))
        raise typer.Exit(0 if card.outcome in ("passed", "dry-run") else 1)
    console.print(Markdown(scorecard_document(card).split("<details>")[0]))
    console.print(f"drill run {run_id}: {state.name}")
    if card.outcome not in ("passed", "dry-run"):
        raise typer.Exit(1)


_NS = typer.Option(..., "--namespace", "-n", help="Namespace (labelled k8s-runbooks.io/drills=allowed).")
_DEP = typer.Option(..., "--deployment", "-d", help="Deployment to break.")
_DRY = typer.Option(False, "--dry-run", help="Show the plan and check guardrails/steady state; inject nothing.")
_APP = typer.Option("auto", "--approval", help="Runbook approval: auto or required (measures the on-call).")
_RESP = typer.Option("auto", "--response", help="alert, direct, none, or auto (alert when wired, else direct).")
_VAL = typer.Option(None, "--value", help="Fault strength (default per fault).")


@drill_app.command("pod-crash")
def pod_crash_cmd(namespace: str = _NS, deployment: str = _DEP, dry_run: bool = _DRY, approval: str = _APP,
                  response: str = _RESP, fault: str = typer.Option("crash", "--fault", help="crash, oom or pod-kill."),
                  value: str | None = _VAL) -> None:
    """Crash the Deployment's pods and score the pod-crash response."""
    _run("pod-crash", _params(namespace, deployment, dry_run, approval, response, fault, value))


@drill_app.command("latency")
def latency_cmd(namespace: str = _NS, deployment: str = _DEP, dry_run: bool = _DRY, approval: str = _APP,
                response: str = _RESP, fault: str = typer.Option("latency", "--fault", help="latency or cpu."),
                value: str | None = _VAL) -> None:
    """Slow the Deployment down and score the high-latency response."""
    _run("latency", _params(namespace, deployment, dry_run, approval, response, fault, value))


@drill_app.command("family")
def family_cmd(namespace: str = _NS, deployment: str = _DEP, dry_run: bool = _DRY, approval: str = _APP,
               response: str = _RESP,
               fault: str = typer.Option(..., "--fault", help="A cluster fault family: " + ", ".join(CLUSTER_FAULTS) + "."),
               as_json: bool = typer.Option(False, "--json", help="Print only the run id and its scorecard as one JSON line.")) -> None:
    """Make one cluster fault family happen and score the response: detect, diagnose (the right cause first), recover
    or escalate."""
    if fault not in CLUSTER_FAULTS:
        raise InvalidInput(f"unknown fault family {fault!r}", hint=f"use one of {', '.join(CLUSTER_FAULTS)}")
    _run("family", _params(namespace, deployment, dry_run, approval, response, fault, None), as_json)


@drill_app.command("schedule")
def schedule_cmd(
    scenario: str = typer.Argument(..., help="pod-crash, latency or a fault family (" + ", ".join(CLUSTER_FAULTS) + ")"),
    on: Optional[bool] = typer.Option(None, "--on/--off", help="Turn the schedule on (drills run) or off."),
    cron: Optional[str] = typer.Option(None, "--cron", help="When, as cron (e.g. '0 3 * * 1': Mondays 03:00)."),
    timezone: str = typer.Option("UTC", "--timezone", help="Time zone of --cron."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Target namespace (labelled for drills)."),
    deployment: Optional[str] = typer.Option(None, "--deployment", "-d", help="Target Deployment."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Scheduled runs only check guardrails and steady state."),
) -> None:
    """Turn a drill's schedule on or off, set when it runs and what it breaks (on the PREFECT_API_URL server)."""
    import os

    from k8s_runbooks.drills.schedules import set_schedule, target_parameters
    from k8s_runbooks.errors import ConfigError
    from k8s_runbooks.submit import PrefectRest

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise ConfigError("PREFECT_API_URL is not set: the server the drill deployments are registered on",
                          hint='e.g. eval "$(k8s-runbooks sandbox env)"')
    if (namespace is None) != (deployment is None):
        raise InvalidInput("give both --namespace and --deployment (the drill's target), or neither")
    params = target_parameters(namespace, deployment, dry_run, scenario) if namespace and deployment else None
    rest = PrefectRest(api, on_retry=lambda msg: console.print(f"[yellow]{msg}[/]", highlight=False))
    try:
        views = set_schedule(rest, scenario, active=on, cron=cron, timezone=timezone, parameters=params)
    finally:
        rest.close()
    for v in views:
        target = (v.parameters.get("params") or {})
        where = f"{target.get('namespace')}/{target.get('deployment')}" if target else "the deployment's defaults"
        console.print(f"drill-{scenario}: {v.cron} ({v.timezone}) {'ON' if v.active else 'off'}, target {where}"
                      + (" (dry run)" if target.get("dry_run") else ""), highlight=False)
