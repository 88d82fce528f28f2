"""`k8s-runbooks run <runbook>` and `k8s-runbooks postmortem <run>`.

The CLI is the composition root: it loads `flows/` (lazily, inside the commands, so `--help` and `--submit`
stay light); the core library (`k8s_runbooks`) never does and stays Prefect-free (.importlinter).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from k8s_runbooks.errors import ConfigError, InvalidInput
from k8s_runbooks.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
run_app = typer.Typer(help="Run a runbook now, against the current kubeconfig and Prefect API.", no_args_is_help=True)

Approval = Literal["required", "auto", "dry-run"]
StateDirOpt = Annotated[
    Optional[Path],
    typer.Option("--sandbox-state-dir", help="Sandbox to fall back on when no kubeconfig / Prefect API is configured."),
]


def use_sandbox_when_unconfigured(state_dir: Path | None) -> list[str]:
    """Fill in KUBECONFIG, PREFECT_API_URL and the K8S_RUNBOOKS_* URLs from a running sandbox, but only
    for the ones the user has not set (and only when no ~/.kube/config exists for the cluster).
    Returns what was filled in, so the CLI can say which cluster it acts on."""
    from k8s_runbooks_cli.annex import sandbox_installed

    if not sandbox_installed():  # the product image: there is no sandbox to fall back on
        return []
    from k8s_runbooks.sandbox import supervisor
    from k8s_runbooks.sandbox.settings import SandboxSettings

    settings = Settings()
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    if not cfg.kubeconfig.exists():
        return []
    up = {c.name for c in supervisor.status(cfg) if c.state == "up"}
    if "cluster" not in up:
        return []
    filled = []
    have_cluster = bool(os.environ.get("KUBECONFIG") or settings.kubeconfig or (Path.home() / ".kube" / "config").exists())
    for line in supervisor.env_lines(cfg):
        key, _, value = line.removeprefix("export ").partition("=")
        if key in os.environ:
            continue
        if key == "KUBECONFIG" and have_cluster:
            continue
        if key == "PREFECT_API_URL" and "prefect" not in up:
            continue
        if key != "KUBECONFIG" and key != "PREFECT_API_URL" and have_cluster:
            continue  # Prometheus etc. of the sandbox only go with the sandbox cluster
        os.environ[key] = value
        filled.append(key)
    return filled


def _prepare(state_dir: Path | None) -> None:
    filled = use_sandbox_when_unconfigured(state_dir)
    if "KUBECONFIG" in filled:
        console.print(f"[yellow]no kubeconfig configured: using the sandbox cluster ({os.environ['KUBECONFIG']})[/]")
    if not os.environ.get("PREFECT_API_URL"):
        console.print("[yellow]PREFECT_API_URL is not set: Prefect starts a temporary server for this run; "
                      "the run will not stay visible in a UI (the post-mortem file is still written).[/]")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="FIELD=VALUE", help="Any other field of the runbook's parameters (the run form in the UI), "
                                         "e.g. --set stable_seconds=10; repeatable; validated like the form.")]


def _params(model: type[Any], extra: list[str] | None = None, **values: Any) -> Any:
    fields: dict[str, Any] = {}
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--set takes FIELD=VALUE, got {item!r}")
        key = key.strip()
        if key in values:
            raise InvalidInput(f"--set {key}: it has an option of its own", hint=f"use --{key.replace('_', '-')}")
        if key not in model.model_fields:
            others = sorted(set(model.model_fields) - set(values))
            raise InvalidInput(f"--set {key}: not a parameter of this runbook", hint=f"one of {', '.join(others)}")
        fields[key] = value
    fields.update({k: v for k, v in values.items() if v is not None})
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid parameters: {problems}") from None


def _report(flow_run_id: str, state: Any, postmortem: Path | None) -> None:
    api = os.environ.get("PREFECT_API_URL", "")
    ui = api.removesuffix("/api") if api else ""
    colour = "green" if state.is_completed() else "red"
    console.print(f"[bold {colour}]{state.name}[/]: {state.message or ''}", highlight=False)
    console.print(f"flow run:    {flow_run_id}")
    if ui:
        console.print(f"run URL:     {ui}/runs/flow-run/{flow_run_id}")
    if postmortem:
        console.print(f"post-mortem: {postmortem}")
        html = postmortem.with_suffix(".html")
        if html.exists():
            console.print(f"             {html}")
    if not state.is_completed():
        raise typer.Exit(1)


SubmitOpt = Annotated[bool, typer.Option(
    "--submit", help="Create a run of the registered deployment (started by the workers: the sandbox's warm runner) "
                     "and follow it, instead of running the flow in this process. Starts in well under a second.")]
WaitOpt = Annotated[bool, typer.Option(help="With --submit: follow the run to its end (--no-wait: print its id and URL).")]
_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _submit(deployment: str, params: Any, wait: bool, state_dir: Path | None) -> None:
    """The run as an alert would create it; the CLI only follows it (no Prefect import: see k8s_runbooks.submit)."""
    from k8s_runbooks import submit

    if not os.environ.get("PREFECT_API_URL"):  # only the API matters here: the workers bring their own cluster
        use_sandbox_when_unconfigured(state_dir)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise ConfigError("--submit needs PREFECT_API_URL: the server the runbook deployments are registered on",
                          hint='e.g. eval "$(k8s-runbooks sandbox env)", or drop --submit to run it in this process')
    ui = api.rstrip("/").removesuffix("/api")
    rest = submit.PrefectRest(api, on_retry=lambda msg: err_console.print(f"[yellow]{msg}[/]", highlight=False))
    try:
        run = rest.create_run(deployment, {"params": params.model_dump(mode="json")}, ["k8s-runbooks", "cli"])
        url = f"{ui}/runs/flow-run/{run.id}"
        console.print(f"submitted {deployment}: flow run {run.name} ({run.id}); the workers' cluster credentials apply")
        console.print(f"run URL:     {url}")
        if not wait:
            return

        def on_state(view: Any) -> None:
            console.print(f"[bold]{view.state_name}[/]" + (f": {view.message}" if view.message else ""), highlight=False)
            if view.state_type == "PAUSED":
                console.print(f"waiting for an approval: open {url} → Resume, and answer the typed form")

        def on_log(line: dict[str, Any]) -> None:
            if line.get("task_run_id") and str(line.get("message", "")).startswith("Finished in state Completed"):
                return  # the engine's line per finished task: noise without the task's name
            level = _LEVELS.get(int(line.get("level") or 20), str(line.get("level")))
            console.print(f"{submit.log_time(line)} {level:<7} {line.get('message', '')}", highlight=False, markup=False)

        try:
            final = submit.follow(rest, run.id, on_state=on_state, on_log=on_log)
        except KeyboardInterrupt:
            console.print(f"stopped following; the run goes on: {url}")
            raise typer.Exit(130) from None
    finally:
        rest.close()
    colour = "green" if final.state_type == "COMPLETED" else "red"
    console.print(f"[bold {colour}]{final.state_name}[/]: {final.message}", highlight=False)
    console.print(f"flow run:    {final.id}")
    console.print(f"post-mortem: written by the run on its worker (artifact `postmortem` on the run page); "
                  f"here: k8s-runbooks postmortem {final.id}", highlight=False)
    if final.state_type != "COMPLETED":
        raise typer.Exit(1)


@run_app.command("pod-crash")
def run_pod_crash_cmd(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the crashing workload.")],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment whose pods crash.")],
    approval: Annotated[str, typer.Option(help="required | auto | dry-run")] = "required",
    approval_timeout: Annotated[Optional[int], typer.Option(help="Seconds to wait for an approval.")] = None,
    drill: Annotated[bool, typer.Option(help="Mark the post-mortem as a drill.")] = False,
    notes: Annotated[Optional[str], typer.Option(help="Free text for the record.")] = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = True,
    set_: SetOpt = None,
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The pod-crash runbook: identify, contain (approval), recover, verify, communicate; then the post-mortem."""
    from flows.params import PodCrashParams

    params = _params(PodCrashParams, set_, namespace=namespace, deployment=deployment, approval=approval,
                     approval_timeout_seconds=approval_timeout, drill=drill, notes=notes)
    if submit:
        return _submit("pod-crash/pod-crash", params, wait, sandbox_state_dir)
    _prepare(sandbox_state_dir)
    from flows.pod_crash import run_pod_crash

    console.rule(f"pod-crash runbook: {namespace}/{deployment} (approval: {approval})")
    if approval == "required":
        console.print("destructive actions wait for an approval: resume the paused run in the Prefect UI "
                      "(run page → Resume) with the typed form")
    _report(*run_pod_crash(params))


def postmortem_cmd(
    flow_run_id: Annotated[str, typer.Argument(help="Flow run id of a runbook run.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Markdown file to write (HTML beside it).")] = None,
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """Rebuild the post-mortem of any runbook run from Prefect (artifacts, states, audit)."""
    _prepare(sandbox_state_dir)
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("PREFECT_API_URL is not set", hint='point it at the server that ran the flow, e.g. eval "$(k8s-runbooks sandbox env)"')
    from flows.postmortem import build_postmortem

    path = build_postmortem(flow_run_id, output)
    console.print(f"post-mortem: {path}")
    if path.with_suffix(".html").exists():
        console.print(f"             {path.with_suffix('.html')}")


@run_app.command("high-latency")
def run_high_latency_cmd(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the slow service.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service whose latency is high.")],
    deployment: Annotated[Optional[str], typer.Option("--deployment", "-d", help="Deployment behind it (default: the service name).")] = None,
    approval: Annotated[str, typer.Option(help="required | auto | dry-run")] = "required",
    p95_threshold_ms: Annotated[Optional[float], typer.Option(help="p95 above this is an incident (default 300 ms).")] = None,
    approval_timeout: Annotated[Optional[int], typer.Option(help="Seconds to wait for an approval.")] = None,
    drill: Annotated[bool, typer.Option(help="Mark the post-mortem as a drill.")] = False,
    notes: Annotated[Optional[str], typer.Option(help="Free text for the record.")] = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = True,
    set_: SetOpt = None,
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The high-latency runbook: metrics, pods, logs, resolve by diagnosis (approval), monitor; then the post-mortem."""
    from flows.params import HighLatencyParams

    params = _params(HighLatencyParams, set_, namespace=namespace, service=service, deployment=deployment, approval=approval,
                     p95_threshold_ms=p95_threshold_ms, approval_timeout_seconds=approval_timeout, drill=drill, notes=notes)
    if submit:
        return _submit("high-latency/high-latency", params, wait, sandbox_state_dir)
    _prepare(sandbox_state_dir)
    from flows.high_latency import run_high_latency

    console.rule(f"high-latency runbook: {namespace}/{service} (approval: {approval})")
    _report(*run_high_latency(params))


@run_app.command("incident")
def run_incident_cmd(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the affected workload.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Affected service (and Deployment unless --deployment).")],
    deployment: Annotated[Optional[str], typer.Option("--deployment", "-d")] = None,
    alertname: Annotated[Optional[str], typer.Option(help="Alert that opened the incident (PodCrashLooping, HighLatency, ...).")] = None,
    kind: Annotated[str, typer.Option(help="auto | pod-crash | high-latency (auto: classify from the alert or by looking).")] = "auto",
    approval: Annotated[str, typer.Option(help="required | auto | dry-run")] = "required",
    drill: Annotated[bool, typer.Option(help="Mark the post-mortem as a drill.")] = False,
    notes: Annotated[Optional[str], typer.Option(help="Free text for the record.")] = None,
    submit: SubmitOpt = False,
    wait: WaitOpt = True,
    set_: SetOpt = None,
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The incident-response plan: identify, contain, eradicate, recover, communicate — one post-mortem."""
    from flows.params import IncidentParams

    params = _params(IncidentParams, set_, namespace=namespace, service=service, deployment=deployment, alertname=alertname,
                     kind=kind, approval=approval, drill=drill, notes=notes)
    if submit:
        return _submit("incident-response/incident-response", params, wait, sandbox_state_dir)
    _prepare(sandbox_state_dir)
    from flows.incident_response import run_incident

    console.rule(f"incident response: {namespace}/{service} (approval: {approval})")
    _report(*run_incident(params))
