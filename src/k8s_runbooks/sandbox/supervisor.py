"""`k8s-runbooks sandbox up | down | status | env | fault`: the sandbox's processes as one unit.

`up` is idempotent: a healthy component is left alone, one whose pid file is stale is started again.
The ports and options of the last `up` are kept in `D/sandbox.json`, so `status`, `env` and `down` in a
later call (or another shell) describe the sandbox that actually runs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox import launchers
from k8s_runbooks.sandbox.binaries import SandboxError, ensure_binaries
from k8s_runbooks.sandbox.launchers import Component, SandboxPorts
from k8s_runbooks.sandbox.localchat import component as localchat
from k8s_runbooks.sandbox.settings import SandboxSettings
from k8s_runbooks.settings import Settings

POD_SUBNET_ENV = "K8S_RUNBOOKS_SANDBOX_POD_SUBNET"  # not (yet) a Settings field
STATE_FILE = "sandbox.json"
POD_MARKER = "k8s_runbooks.sandbox.workloads"  # command line of pods running sandbox images
ORDER = ["cluster", "alertmanager", "pushgateway", "prometheus", "chatops", "postgres", "prefect", "runner", "receiver"]
FIRST = ("postgres",)  # up and its database made before the rest (Prefect migrates it on start)
AFTER_PREFECT = ("runner", "receiver")  # started once the Prefect API answers (they register/dispatch on start)
TOKEN_FILE = "secrets/receiver-token"


@dataclass
class SandboxConfig:
    state_dir: Path
    ports: SandboxPorts
    pod_subnet: str = "127.1"
    webhook_url: str = ""
    with_prefect: bool = True
    prefect_database: str = "sqlite"  # or postgres (sandbox/postgres.py)

    @classmethod
    def from_settings(cls, settings: SandboxSettings, state_dir: Path | None = None, with_prefect: bool = True,
                      pod_subnet: str | None = None) -> "SandboxConfig":
        ports = SandboxPorts(
            api=settings.api_port, prometheus=settings.prometheus_port,
            alertmanager=settings.alertmanager_port, pushgateway=settings.pushgateway_port,
            prefect=settings.prefect_port, receiver=settings.receiver_port, postgres=settings.postgres_port,
            chatops=settings.chatops_port,
        )
        webhook = settings.alert_webhook_url or f"http://127.0.0.1:{ports.receiver}/v1/alerts/alertmanager"
        return cls(
            state_dir=Path(state_dir or settings.state_dir).resolve(), ports=ports,
            pod_subnet=pod_subnet or os.environ.get(POD_SUBNET_ENV, "127.1"), webhook_url=webhook,
            with_prefect=with_prefect, prefect_database=settings.prefect_database,
        )

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        (self.state_dir / STATE_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> "SandboxConfig | None":
        path = Path(state_dir).resolve() / STATE_FILE
        try:
            data = json.loads(path.read_text())
            data["state_dir"] = Path(data["state_dir"])
            data["ports"] = SandboxPorts(**data["ports"])
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"{path} is unreadable ({exc}); remove it and run `k8s-runbooks sandbox up` again") from exc


def resolve_config(settings: SandboxSettings, state_dir: Path | None) -> SandboxConfig:
    """The config of the sandbox that runs in `state_dir` (from its last `up`), else the settings."""
    directory = Path(state_dir or settings.state_dir)
    return SandboxConfig.load(directory) or SandboxConfig.from_settings(settings, directory)


@dataclass
class ComponentState:
    name: str
    url: str
    pid: int | None
    state: str  # started | running | up | down | unhealthy | stopped
    seconds: float | None = None
    detail: str = ""


@dataclass
class UpResult:
    components: list[ComponentState] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    demo_ready_s: float | None = None
    faulted: dict[str, dict[str, str]] = field(default_factory=dict)  # demo deployments with a fault set


def receiver_token(cfg: SandboxConfig, create: bool = False) -> str | None:
    """The receiver's bearer token: K8S_RUNBOOKS_RECEIVER_TOKEN, else one generated per state dir (0600 file)."""
    path = cfg.state_dir / TOKEN_FILE
    configured = Settings().receiver_token
    if configured is not None and configured.get_secret_value():
        token = configured.get_secret_value()
    elif path.exists():
        return path.read_text().strip() or None
    elif create:
        token = secrets.token_hex(32)  # no "-": a token passed as a command-line value is never read as an option
    else:
        return None
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    return token


def components(cfg: SandboxConfig, binaries: dict[str, Path] | None = None) -> list[Component]:
    """Component descriptions; with `binaries=None` only what status/down need (no binary look-up, no config)."""
    state, ports = cfg.state_dir, cfg.ports
    if binaries is None:
        binaries = {name: Path(name) for name in ("prometheus", "alertmanager", "pushgateway")}
        render = False
    else:
        render = True
    comps = [launchers.cluster_component(state, ports, cfg.pod_subnet)]
    with_receiver = cfg.with_prefect and launchers.receiver_available()
    token = receiver_token(cfg, create=render) if with_receiver else None
    if render:
        comps += [
            launchers.alertmanager_component(state, ports, binaries["alertmanager"], cfg.webhook_url,
                                             token_file=state / TOKEN_FILE if token else None),
            launchers.pushgateway_component(state, ports, binaries["pushgateway"]),
            launchers.prometheus_component(state, ports, binaries["prometheus"]),
        ]
    else:
        comps += [_bare("alertmanager", ports.alertmanager, "/-/ready", "alertmanager"),
                  _bare("pushgateway", ports.pushgateway, "/-/ready", "pushgateway"),
                  _bare("prometheus", ports.prometheus, "/-/ready", "prometheus")]
    if cfg.with_prefect:
        if ports.chatops:  # the local Slack + PagerDuty the runner and the receiver use (approvals, pages)
            comps.append(localchat.chatops_component(state, ports.chatops) if render else localchat.bare_component(state, ports.chatops))
        database_url = None
        if cfg.prefect_database == "postgres":
            from k8s_runbooks.sandbox import postgres

            comps.append(postgres.component(state, ports.postgres) if render else launchers.Component(
                name="postgres", port=ports.postgres, port_setting="K8S_RUNBOOKS_SANDBOX_POSTGRES_PORT",
                url=f"postgresql://127.0.0.1:{ports.postgres}", health_url=f"tcp://127.0.0.1:{ports.postgres}",
                command=[], marker="postgres"))
            database_url = postgres.database_url(ports.postgres)
        comps.append(launchers.prefect_component(state, ports, database_url) if render
                     else _bare("prefect", ports.prefect, "/api/health", "prefect", url_suffix="/api"))
        comps.append(launchers.runner_component(state, ports))
        if with_receiver:
            comps.append(launchers.receiver_component(state, ports, token))
        chat = localchat.chat_env(state, ports.chatops) if render else {}
        for comp in comps:
            if comp.name in ("runner", "receiver"):
                comp.env.update(chat)
    return comps


def _bare(name: str, port: int, health: str, marker: str, url_suffix: str = "") -> Component:
    url = f"http://127.0.0.1:{port}"
    return Component(name=name, port=port, port_setting=f"K8S_RUNBOOKS_SANDBOX_{name.upper()}_PORT",
                     url=url + url_suffix, health_url=url + health, command=[], marker=marker)


def up(cfg: SandboxConfig, demo: bool = True, demo_timeout_s: float = 120.0) -> UpResult:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    binaries = ensure_binaries(cfg.state_dir, ("prometheus", "promtool", "alertmanager", "amtool", "pushgateway"))
    comps = components(cfg, binaries)
    result = UpResult()
    to_start: list[Component] = []
    for comp in comps:
        pid = launchers.running_pid(cfg.state_dir, comp)
        if pid is not None:
            result.components.append(ComponentState(comp.name, comp.url, pid, "running"))
        else:
            launchers.pid_path(cfg.state_dir, comp.name).unlink(missing_ok=True)  # stale or absent
            to_start.append(comp)
    launchers.check_ports_free(to_start)
    starting = {c.name for c in to_start}
    cfg.save()
    for phase in ([c for c in comps if c.name in FIRST],
                  [c for c in comps if c.name not in AFTER_PREFECT and c.name not in FIRST],
                  [c for c in comps if c.name in AFTER_PREFECT]):
        started: dict[str, tuple[int, float]] = {}
        for comp in phase:
            if comp.name in starting:
                started[comp.name] = (launchers.start(cfg.state_dir, comp), time.monotonic())
        for comp in phase:
            state = next(s for s in result.components if s.name == comp.name) if comp.name not in started else None
            if state is not None:
                # Already running: still wait for it (it may be a previous `up` still starting).
                launchers.wait_healthy(cfg.state_dir, comp, state.pid or 0)
                continue
            pid, t0 = started[comp.name]
            launchers.wait_healthy(cfg.state_dir, comp, pid)
            result.components.append(ComponentState(comp.name, comp.url, pid, "started", time.monotonic() - t0))
            if comp.name == "cluster":
                write_kubeconfig(cfg, comp.url)
            if comp.name == "postgres":
                from k8s_runbooks.sandbox import postgres

                postgres.ensure_database(cfg.ports.postgres)
    if not cfg.kubeconfig.exists():
        write_kubeconfig(cfg, f"http://127.0.0.1:{cfg.ports.api}")
    result.components.sort(key=lambda s: ORDER.index(s.name))
    # First `shop` as the demo makes it (labelled: drills allowed), also with --no-demo: rbac.yaml's Role lands in it,
    # and a later `up` with the demo must find it labelled.
    from k8s_runbooks.sandbox import demo_workload

    demo_workload.ensure_namespace(cfg.kubeconfig, demo_workload.NAMESPACE)
    # The identities GKE has (deployments/k8s/base/rbac.yaml), enforced; D/kubeconfigs/ holds one per account.
    from k8s_runbooks.sandbox import identities

    identities.apply_shipped_rbac(f"http://127.0.0.1:{cfg.ports.api}")
    for account in (identities.RUNBOOKS_SA, identities.WORKER_SA):
        identities.service_account_kubeconfig(f"http://127.0.0.1:{cfg.ports.api}", cfg.state_dir, name=account)
    if demo:
        t0 = time.monotonic()
        result.created = demo_workload.ensure_demo_workload(cfg.kubeconfig)
        # A deployment left with a fault (e.g. an earlier demo) may never become ready: don't wait for it.
        for name in demo_workload.DEPLOYMENTS:
            faults = demo_workload.active_faults(cfg.kubeconfig, demo_workload.NAMESPACE, name)
            if faults:
                result.faulted[name] = faults
        healthy = [n for n in demo_workload.DEPLOYMENTS if n not in result.faulted]
        if healthy:
            demo_workload.wait_ready(cfg.kubeconfig, names=healthy, timeout_s=demo_timeout_s)
        result.demo_ready_s = time.monotonic() - t0
    return result


def write_kubeconfig(cfg: SandboxConfig, server_url: str) -> None:
    from k8s_runbooks.sandbox.kubeconfig import write_kubeconfig as write  # the cluster's own module

    write(cfg.kubeconfig, server_url)


def status(cfg: SandboxConfig) -> list[ComponentState]:
    rows = []
    for comp in components(cfg):
        pid = launchers.running_pid(cfg.state_dir, comp)
        if pid is None:
            rows.append(ComponentState(comp.name, comp.url, None, "down"))
        elif launchers.is_healthy(comp):
            rows.append(ComponentState(comp.name, comp.url, pid, "up"))
        else:
            rows.append(ComponentState(comp.name, comp.url, pid, "unhealthy", detail=f"{comp.health_url} not 200"))
    return rows


def down(cfg: SandboxConfig) -> list[ComponentState]:
    """Stop every process `up` started in this state dir (by pid file, after checking it is ours), and pods."""
    stopped: list[ComponentState] = []
    names = {c.name: c for c in components(cfg)}
    # Also pid files of components not in this config (e.g. prefect after `up --no-prefect` ... then `up`).
    for path in sorted((cfg.state_dir / "pids").glob("*.pid")):
        if path.stem not in names:
            names[path.stem] = _bare(path.stem, 0, "", "")
    for name in reversed(ORDER + [n for n in names if n not in ORDER]):
        comp = names.get(name)
        if comp is None:
            continue
        path = launchers.pid_path(cfg.state_dir, name)
        pid = launchers.running_pid(cfg.state_dir, comp)
        if pid is not None:
            launchers.stop_pid(pid)
            stopped.append(ComponentState(name, comp.url, pid, "stopped"))
        path.unlink(missing_ok=True)
    stopped += stop_leftover_pods(cfg.state_dir)
    return stopped


def stop_leftover_pods(state_dir: Path) -> list[ComponentState]:
    """Pod processes the cluster process did not stop (e.g. it was killed): listed in `D/pids/pods/*.pid`."""
    rows = []
    for path in sorted((Path(state_dir) / "pids" / "pods").glob("*.pid")):
        pid = launchers.read_pid(path)
        if pid is not None:
            since = path.stat().st_mtime
            proc = (launchers.owned_process(pid, state_dir, since=since)
                    or launchers.owned_process(pid, state_dir, marker=POD_MARKER, since=since, owner_required=False))
            if proc is not None:
                launchers.stop_pid(pid, grace_s=5)
                rows.append(ComponentState(f"pod {path.stem}", "", pid, "stopped"))
        path.unlink(missing_ok=True)
    return rows


def env_lines(cfg: SandboxConfig) -> list[str]:
    p = cfg.ports
    values = {
        "KUBECONFIG": str(cfg.kubeconfig),
        "PREFECT_API_URL": f"http://127.0.0.1:{p.prefect}/api",
        "K8S_RUNBOOKS_PROMETHEUS_URL": f"http://127.0.0.1:{p.prometheus}",
        "K8S_RUNBOOKS_ALERTMANAGER_URL": f"http://127.0.0.1:{p.alertmanager}",
        "K8S_RUNBOOKS_PUSHGATEWAY_URL": f"http://127.0.0.1:{p.pushgateway}",
    }
    if not cfg.with_prefect:
        values.pop("PREFECT_API_URL")
    elif launchers.receiver_available():
        values["K8S_RUNBOOKS_RECEIVER_URL"] = f"http://127.0.0.1:{p.receiver}"
        token = receiver_token(cfg)
        if token:
            values["K8S_RUNBOOKS_RECEIVER_TOKEN"] = token
    if cfg.with_prefect:
        values.update(localchat.chat_env(cfg.state_dir, cfg.ports.chatops))
    return [f"export {k}={v}" for k, v in values.items()]


def fault(cfg: SandboxConfig, kind: str, namespace: str, deployment: str, value: str | None = None,
          message: str | None = None, flag: str | None = None) -> dict[str, Any]:
    """Env faults are a `kubectl set env`; cluster faults (and clearing them) go through the guard, as a drill's
    do: the namespace must allow drills, and each one leaves an audit record. `clear` undoes both."""
    if not cfg.kubeconfig.exists():
        raise SandboxError(f"no kubeconfig at {cfg.kubeconfig}; run `k8s-runbooks sandbox up` first")
    from k8s_runbooks.sandbox import demo_workload
    from k8s_runbooks.sandbox.fault_kinds import CLUSTER_FAULTS

    if kind in CLUSTER_FAULTS:
        outcome = _guarded_fault(cfg, namespace, deployment, {"fault": kind}, inject=True)
        return {"namespace": namespace, "deployment": deployment, "set": {}, "removed": [], "outcome": outcome}
    done = demo_workload.set_fault(cfg.kubeconfig, namespace, deployment, kind, value, message, flag)
    if kind == "clear" and demo_workload.active_cluster_faults(cfg.kubeconfig, namespace, deployment):
        done["outcome"] = _guarded_fault(cfg, namespace, deployment, {"clear_faults": True}, inject=False)
    return done


def _guarded_fault(cfg: SandboxConfig, namespace: str, deployment: str, patch: dict[str, Any], *, inject: bool) -> str:
    from k8s_runbooks.guard import Guard
    from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef

    # The audit record goes where the sandbox's runner keeps its own (launchers: state/runbooks), not the cwd.
    settings = Settings(kubeconfig=cfg.kubeconfig, kube_context=None, state_dir=cfg.state_dir / "runbooks")
    kind = ActionKind.inject_fault if inject else ActionKind.remove_fault
    action = Action(kind=kind, target=WorkloadRef(namespace=namespace, name=deployment), patch=patch,
                    reason=f"k8s-runbooks sandbox fault {patch.get('fault') or 'clear'}")
    result = Guard(settings).execute(action, "auto", actor="sandbox-cli", flow_run_id=None)
    if result.decision is not Decision.allowed:
        raise SandboxError(f"the guard refused {action.describe()}: {result.detail}",
                           hint=f"label the namespace for drills: kubectl label namespace {namespace} "
                                "k8s-runbooks.io/drills=allowed")
    return result.detail


def firing_alerts(alertmanager_url: str, alertname: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Active alerts named `alertname` whose labels include `labels` (Alertmanager API v2)."""
    import httpx

    params = [("filter", f'alertname="{alertname}"'), ("active", "true"), ("silenced", "false")]
    params += [("filter", f'{k}="{v}"') for k, v in (labels or {}).items()]
    try:
        resp = httpx.get(f"{alertmanager_url}/api/v2/alerts", params=params, timeout=launchers.HTTP_TIMEOUT_S)
        resp.raise_for_status()
        return list(resp.json())
    except (httpx.HTTPError, ValueError):
        return []


def wait_for_alert(alertmanager_url: str, alertname: str, labels: dict[str, str] | None = None,
                   timeout_s: float = 120.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alerts = firing_alerts(alertmanager_url, alertname, labels)
        if alerts:
            return alerts
        time.sleep(1.0)
    raise SandboxError(f"alert {alertname} {labels or ''} did not fire in Alertmanager within {timeout_s:.0f}s",
                       hint="check Prometheus rules at /api/v1/rules and its targets at /api/v1/targets")
