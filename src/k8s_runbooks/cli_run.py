"""`k8s-runbooks run <runbook>` and `k8s-runbooks postmortem <run>`.

The CLI is the composition root: it is the one place in `src/k8s_runbooks` that loads `flows/` (lazily,
inside the commands), so the core library stays Prefect-free.
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
    from k8s_runbooks.sandbox import supervisor

    settings = Settings()
    cfg = supervisor.resolve_config(settings, state_dir)
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


def _params(model: type[Any], **values: Any) -> Any:
    try:
        return model(**{k: v for k, v in values.items() if v is not None})
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


@run_app.command("pod-crash")
def run_pod_crash_cmd(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the crashing workload.")],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment whose pods crash.")],
    approval: Annotated[str, typer.Option(help="required | auto | dry-run")] = "required",
    approval_timeout: Annotated[Optional[int], typer.Option(help="Seconds to wait for an approval.")] = None,
    drill: Annotated[bool, typer.Option(help="Mark the post-mortem as a drill.")] = False,
    notes: Annotated[Optional[str], typer.Option(help="Free text for the record.")] = None,
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The pod-crash runbook: identify, contain (approval), recover, verify, communicate; then the post-mortem."""
    from flows.params import PodCrashParams

    params = _params(PodCrashParams, namespace=namespace, deployment=deployment, approval=approval,
                     approval_timeout_seconds=approval_timeout, drill=drill, notes=notes)
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
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The high-latency runbook: metrics, pods, logs, resolve by diagnosis (approval), monitor; then the post-mortem."""
    from flows.params import HighLatencyParams

    params = _params(HighLatencyParams, namespace=namespace, service=service, deployment=deployment, approval=approval,
                     p95_threshold_ms=p95_threshold_ms, approval_timeout_seconds=approval_timeout, drill=drill, notes=notes)
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
    sandbox_state_dir: StateDirOpt = None,
) -> None:
    """The incident-response plan: identify, contain, eradicate, recover, communicate — one post-mortem."""
    from flows.params import IncidentParams

    params = _params(IncidentParams, namespace=namespace, service=service, deployment=deployment, alertname=alertname,
                     kind=kind, approval=approval, drill=drill, notes=notes)
    _prepare(sandbox_state_dir)
    from flows.incident_response import run_incident

    console.rule(f"incident response: {namespace}/{service} (approval: {approval})")
    _report(*run_incident(params))
