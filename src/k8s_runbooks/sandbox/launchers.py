"""Start, stop and health-check the sandbox's processes.

Every component runs detached (its own session and process group) so it outlives the CLI call that started
it; it is known by `D/pids/<name>.pid` and logs to `D/logs/<name>.log`. A PID is only ever signalled after
checking that the process is one we started for this state dir (pid files can go stale and PIDs get reused).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import httpx
import psutil
import yaml

from k8s_runbooks.sandbox.binaries import SandboxError
from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path

OWNER_ENV = "K8S_RUNBOOKS_SANDBOX_OWNER"
CONFIG_DIR = Path(__file__).parent / "config"
HTTP_TIMEOUT_S = 2.0
STOP_GRACE_S = 10.0

_children: dict[int, subprocess.Popen[bytes]] = {}  # reaped on stop/poll so dead children are not zombies


@dataclass
class Component:
    name: str
    port: int
    port_setting: str  # env var that changes the port, quoted in errors
    url: str  # what users and clients use
    health_url: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    marker: str = ""  # must appear in the process cmdline (besides the owner check)
    timeout_s: float = 60.0
    extra_ready: Callable[[], bool] | None = None  # further readiness condition after health
    extra_ready_what: str = ""
    cwd: Path | None = None  # default: the state dir


# --- paths ---------------------------------------------------------------------------------------

def pid_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "pids" / f"{name}.pid"


def log_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "logs" / f"{name}.log"


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


# --- process identity ------------------------------------------------------------------------------

def owned_process(pid: int, state_dir: Path, marker: str = "", since: float | None = None,
                  owner_required: bool = True) -> psutil.Process | None:
    """The live process `pid` if it is one we started for `state_dir`; None otherwise (dead, zombie, someone else's).

    `owner_required=False` (pod processes: the kubelet gives them a clean env) accepts a process on its
    `marker` and start time alone.
    """
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if since is not None and proc.create_time() > since + 1.0:
            return None  # started after the pid file was written: the PID was reused
        cmdline = " ".join(proc.cmdline())
        if marker and marker not in cmdline:
            return None
        if not owner_required:
            return proc if marker else None
        state = str(Path(state_dir).resolve())
        if state in cmdline:
            return proc
        try:
            if proc.environ().get(OWNER_ENV) == state:
                return proc
        except (psutil.AccessDenied, psutil.ZombieProcess):
            pass
        return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def running_pid(state_dir: Path, component: Component) -> int | None:
    path = pid_path(state_dir, component.name)
    pid = read_pid(path)
    if pid is None:
        return None
    since = path.stat().st_mtime if path.exists() else None
    return pid if owned_process(pid, state_dir, component.marker, since) else None


# --- ports -----------------------------------------------------------------------------------------

def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(components: list[Component]) -> None:
    seen: dict[int, str] = {}
    for comp in components:
        if not comp.port:  # no listening socket of its own (the runner)
            continue
        if comp.port in seen:
            raise SandboxError(
                f"{comp.name} and {seen[comp.port]} are both configured for port {comp.port}; "
                f"set {comp.port_setting} to another port"
            )
        seen[comp.port] = comp.name
        if not port_is_free(comp.port):
            raise SandboxError(
                f"port {comp.port} on 127.0.0.1 (for {comp.name}) is already in use; "
                f"stop what uses it or set {comp.port_setting} to another port"
            )


# --- start / health / stop ---------------------------------------------------------------------------

def start(state_dir: Path, comp: Component) -> int:
    """Start `comp` detached, write its pid file, return the PID (does not wait for health)."""
    state_dir = Path(state_dir).resolve()
    log = log_path(state_dir, comp.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_path(state_dir, comp.name).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **comp.env, OWNER_ENV: str(state_dir)}
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(comp.command)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                comp.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=comp.cwd or state_dir, start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"could not start {comp.name} ({comp.command[0]}): {exc}") from exc
    _children[proc.pid] = proc
    pid_path(state_dir, comp.name).write_text(f"{proc.pid}\n")
    return proc.pid


def is_healthy(comp: Component) -> bool:
    if comp.health_url.startswith("tcp://"):  # a server without HTTP (Postgres): it accepts connections
        host, _, port = comp.health_url[len("tcp://"):].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=HTTP_TIMEOUT_S):
                return True
        except OSError:
            return False
    try:
        resp = httpx.get(comp.health_url, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def wait_healthy(state_dir: Path, comp: Component, pid: int) -> None:
    deadline = time.monotonic() + comp.timeout_s
    healthy = False
    child = _children.get(pid)  # kept here: owned_process forgets a dead child, and its exit status with it
    while time.monotonic() < deadline:
        if owned_process(pid, state_dir, comp.marker) is None:
            code = None
            if child is not None:
                try:
                    code = child.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    continue  # alive, not yet exec'd (its command line is still ours): starting, not dead
            raise ComponentExited(f"{comp.name} {exit_reason(code)} during start-up; {log_excerpt(state_dir, comp.name)}",
                                  returncode=code)
        if not healthy:
            healthy = is_healthy(comp)
        if healthy and (comp.extra_ready is None or comp.extra_ready()):
            return
        time.sleep(0.2)
    what = comp.extra_ready_what if healthy else f"{comp.health_url} answering 200"
    raise SandboxError(f"{comp.name} not ready after {comp.timeout_s:.0f}s (waiting for {what}); {log_excerpt(state_dir, comp.name)}")


class ComponentExited(SandboxError):
    """A component died while starting; `returncode` as subprocess gives it (-N: killed by signal N), None if unknown."""

    def __init__(self, message: str, *, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def exit_reason(code: int | None) -> str:
    """'exited with code 1', 'was killed by SIGKILL' or 'exited' (not our child: no status to read)."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def log_excerpt(state_dir: Path, name: str, lines: int = 5) -> str:
    path = log_path(state_dir, name)
    try:
        tail = [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:]
    except OSError:
        return f"no log at {path}"
    return f"last lines of {path}: " + " | ".join(line.strip()[:300] for line in tail)


def stop_pid(pid: int, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM the process group led by `pid` (or just `pid`), wait, then SIGKILL. Caller checked ownership."""
    try:
        proc = psutil.Process(pid)
        group = os.getpgid(pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        _reap(pid)
        return False
    members = [proc]
    if group == pid:  # we started it with start_new_session, so it leads its own group
        for other in psutil.process_iter():
            try:
                if other.pid != pid and os.getpgid(other.pid) == group:
                    members.append(other)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
    _signal(members, signal.SIGTERM, group if group == pid else None)
    child = _children.get(pid)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if child is not None:
            child.poll()
        alive = [m for m in members if _alive(m)]
        if not alive:
            break
        time.sleep(0.1)
    else:
        alive = [m for m in members if _alive(m)]
        if alive:  # once the whole group is gone its id may be reused: never signal it then
            _signal(alive, signal.SIGKILL, group if group == pid else None)
            psutil.wait_procs([m for m in alive if _alive(m)], timeout=5)
    _reap(pid)
    return True


def _signal(procs: list[psutil.Process], sig: signal.Signals, group: int | None) -> None:
    if group is not None:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:  # members that left the group (or no group) still get the signal
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# --- components ------------------------------------------------------------------------------------

@dataclass
class SandboxPorts:
    api: int
    prometheus: int
    alertmanager: int
    pushgateway: int
    prefect: int
    receiver: int
    chatops: int = 0  # the local Slack + PagerDuty (0: none, e.g. the state of an older `up`)
    postgres: int = 15432  # only with K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE=postgres


def cluster_component(state_dir: Path, ports: SandboxPorts, pod_subnet: str) -> Component:
    state = str(Path(state_dir).resolve())
    return Component(
        name="cluster", port=ports.api, port_setting="K8S_RUNBOOKS_SANDBOX_API_PORT",
        url=f"http://127.0.0.1:{ports.api}", health_url=f"http://127.0.0.1:{ports.api}/healthz",
        command=[sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", state,
                 "--port", str(ports.api), "--pod-subnet", pod_subnet],
        marker="k8s_runbooks.sandbox.cluster", timeout_s=30,
    )


def alertmanager_component(state_dir: Path, ports: SandboxPorts, binary: Path, webhook_url: str,
                           token_file: Path | None = None) -> Component:
    """`token_file`: Alertmanager sends `Authorization: Bearer <its content>` to the webhook (the receiver's token)."""
    state = Path(state_dir).resolve()
    config = state / "config" / "alertmanager.yml"
    http_config = ""
    if token_file is not None:
        http_config = ("\n        http_config:\n          authorization:\n            type: Bearer\n"
                       f"            credentials_file: \"{token_file}\"")
    render(CONFIG_DIR / "alertmanager.yml", config, webhook_url=webhook_url, http_config=http_config,
           group_wait="0s", group_interval="1s", repeat_interval="1h")
    (state / "alertmanager").mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{ports.alertmanager}"
    return Component(
        name="alertmanager", port=ports.alertmanager, port_setting="K8S_RUNBOOKS_SANDBOX_ALERTMANAGER_PORT",
        url=url, health_url=f"{url}/-/ready",
        command=[str(binary), f"--config.file={config}", f"--storage.path={state / 'alertmanager'}",
                 f"--web.listen-address=127.0.0.1:{ports.alertmanager}", "--cluster.listen-address=",
                 f"--web.external-url={url}"],
        marker=str(binary.name), timeout_s=30,
    )


def alertmanager_known(prometheus_url: str, alertmanager_port: int) -> bool:
    """Prometheus lists Alertmanager as active: alerts fired from now on are delivered at once."""
    try:
        resp = httpx.get(f"{prometheus_url}/api/v1/alertmanagers", timeout=HTTP_TIMEOUT_S)
        active = resp.json()["data"]["activeAlertmanagers"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return any(f":{alertmanager_port}/" in am.get("url", "") for am in active)


def prometheus_component(state_dir: Path, ports: SandboxPorts, binary: Path) -> Component:
    state = Path(state_dir).resolve()
    config_dir = state / "config"
    rules = config_dir / "rules.yml"
    render(CONFIG_DIR / "rules.yml", rules, **sandbox_rule_params())
    config = config_dir / "prometheus.yml"
    render(CONFIG_DIR / "prometheus.yml", config,
           scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s", sd_refresh_interval="2s",
           rules_file=str(rules), api_address=f"127.0.0.1:{ports.api}",
           alertmanager_address=f"127.0.0.1:{ports.alertmanager}",
           pushgateway_address=f"127.0.0.1:{ports.pushgateway}")
    empty = state / "prometheus-web"  # Debian's console templates/UI assets are not extracted: API only
    for sub in ("consoles", "console_libraries", "assets"):
        (empty / sub).mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{ports.prometheus}"
    return Component(
        name="prometheus", port=ports.prometheus, port_setting="K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT",
        url=url, health_url=f"{url}/-/ready",
        command=[str(binary), f"--config.file={config}", f"--storage.tsdb.path={state / 'prometheus'}",
                 f"--web.listen-address=127.0.0.1:{ports.prometheus}", "--rules.alert.resend-delay=1s",
                 "--web.enable-lifecycle", f"--web.console.templates={empty / 'consoles'}",
                 f"--web.console.libraries={empty / 'console_libraries'}",
                 f"--web.local-assets={empty / 'assets'}", "--storage.tsdb.retention.time=2d"],
        marker=str(binary.name), timeout_s=60,
        extra_ready=lambda: alertmanager_known(url, ports.alertmanager),
        extra_ready_what=f"/api/v1/alertmanagers to list 127.0.0.1:{ports.alertmanager}",
    )


def pushgateway_component(state_dir: Path, ports: SandboxPorts, binary: Path) -> Component:
    state = Path(state_dir).resolve()
    (state / "pushgateway").mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{ports.pushgateway}"
    return Component(
        name="pushgateway", port=ports.pushgateway, port_setting="K8S_RUNBOOKS_SANDBOX_PUSHGATEWAY_PORT",
        url=url, health_url=f"{url}/-/ready",
        command=[str(binary), f"--web.listen-address=127.0.0.1:{ports.pushgateway}",
                 f"--persistence.file={state / 'pushgateway' / 'metrics.data'}"],
        marker=str(binary.name), timeout_s=30,
    )


LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def prefect_component(state_dir: Path, ports: SandboxPorts, database_url: str | None = None) -> Component:
    """`database_url`: Postgres (sandbox/postgres.py); None: SQLite in D/prefect/."""
    state = Path(state_dir).resolve()
    home = state / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{ports.prefect}"
    return Component(
        name="prefect", port=ports.prefect, port_setting="K8S_RUNBOOKS_SANDBOX_PREFECT_PORT",
        url=f"{url}/api", health_url=f"{url}/api/health",
        # Our wrapper of `prefect server start`: SQLite write transactions BEGIN IMMEDIATE (see its docstring).
        command=[sys.executable, "-m", "k8s_runbooks.sandbox.prefect_server",
                 "--host", "127.0.0.1", "--port", str(ports.prefect)],
        env={
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_UI_API_URL": f"{url}/api",
            "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",  # a 503 "database is locked" leaves a trace in prefect.log
            # Remediation-slot leases on disk (PREFECT_HOME/concurrency_leases): the default in-memory storage
            # forgets them on a restart, so runs holding a slot (e.g. waiting for approval) crash at their next
            # renewal (410) and the limits' slots stay taken for good.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        },
        marker="prefect", timeout_s=240,  # a fresh DB on a busy 2-core machine took 65 s
    )


def sandbox_rule_params() -> dict[str, str]:
    """Short windows for the sandbox (1 s scrapes); a real cluster renders the same file with longer ones."""
    return {
        "latency_window": "30s", "latency_for": "5s", "crash_window": "1m", "crash_for": "0s",
        # A sandbox pod starts in a second or two: these outlast a normal rollout's not-Ready moments.
        "waiting_for": "5s", "not_ready_for": "10s", "rollout_for": "10s", "endpoints_for": "5s",
        "runbook_base_url": "runbooks",
    }


def render(template: Path, target: Path, **params: str) -> None:
    text = Template(template.read_text()).substitute(**params)
    yaml.safe_load(text)  # a template bug must fail here, not as a crash-looping Prometheus
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


# --- runbook runner and alert receiver (need the Prefect server) -------------------------------------

def repo_root() -> Path:
    """The checkout the sandbox runs from: flows/ and deployments/ live there (editable install)."""
    return Path(__file__).resolve().parents[3]


def runbook_env(state_dir: Path, ports: SandboxPorts) -> dict[str, str]:
    """Settings of every process that runs runbooks or talks to the sandbox's Prefect."""
    state = Path(state_dir).resolve()
    return {
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        "PREFECT_HOME": str(state / "prefect" / "client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "KUBECONFIG": str(state / "kubeconfig"),
        "K8S_RUNBOOKS_KUBECONFIG": str(state / "kubeconfig"),
        "K8S_RUNBOOKS_PROMETHEUS_URL": f"http://127.0.0.1:{ports.prometheus}",
        "K8S_RUNBOOKS_ALERTMANAGER_URL": f"http://127.0.0.1:{ports.alertmanager}",
        "K8S_RUNBOOKS_PUSHGATEWAY_URL": f"http://127.0.0.1:{ports.pushgateway}",
        "K8S_RUNBOOKS_STATE_DIR": str(state / "runbooks"),
        "K8S_RUNBOOKS_REPORTS_DIR": str(state / "reports"),
    }


def runner_ready_path(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "runner.ready"


def runner_component(state_dir: Path, ports: SandboxPorts, query_seconds: float | None = None,
                     mode: str | None = None) -> Component:
    """`python -m k8s_runbooks_prefect.deploy serve`: registers the runbook deployments and runs them (a Prefect Runner);
    warm (forked from a pre-imported fork server) or stock per K8S_RUNBOOKS_RUNNER_MODE (settings.py)."""
    from k8s_runbooks.settings import Settings

    settings = Settings()
    query_seconds = query_seconds or settings.runner_query_seconds
    mode = mode or settings.runner_mode
    state = Path(state_dir).resolve()
    ready = runner_ready_path(state)
    pid_file = pid_path(state, "runner")
    url = f"http://127.0.0.1:{ports.prefect}"
    return Component(
        name="runner", port=0, port_setting="", url=f"{url}/deployments",
        health_url=f"{url}/api/health",
        command=[sys.executable, "-m", "k8s_runbooks_prefect.deploy", "serve", "--query-seconds", str(query_seconds),
                 "--runner", mode, "--drills-active", "--ready-file", str(ready),
                 "--run-pid-dir", str(state / "pids" / "runs")],  # <flow run id>.pid per live warm run
        # Repeated demos/drills act on the same target within minutes: a short cooldown (production: 300 s).
        # Runbooks run as the least-privilege ServiceAccount of deployments/k8s/base/rbac.yaml, as a worker's Jobs do
        # on GKE (the kubeconfig `sandbox up` writes; target namespaces need the runbook Role: identities.py).
        env={**runbook_env(state, ports), "PYTHONPATH": str(repo_root()), "K8S_RUNBOOKS_COOLDOWN_SECONDS": "30",
             "K8S_RUNBOOKS_KUBECONFIG": str(account_kubeconfig_path(state))},
        # 240 s: registering five deployments (and warming the fork server) took over 120 s at load 30 on 2 cores.
        marker="k8s_runbooks_prefect.deploy", timeout_s=240, cwd=repo_root(),
        extra_ready=lambda: ready.exists() and read_pid(ready) == read_pid(pid_file),
        extra_ready_what=f"{ready} (deployments registered)",
    )


def receiver_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("k8s_runbooks_prefect.alerts.server") is not None


def receiver_routes() -> Path:
    """Sandbox routes: auto-approval for the demo namespaces (shop, drill-*), unless
    K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES names another file (the test suite routes only drill-*, so the
    alert path never races the runbook tests that crash `shop` on purpose)."""
    chosen = os.environ.get("K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES")
    if chosen:
        return Path(chosen).resolve()
    sandbox = repo_root() / "deployments" / "alert-routes.sandbox.yaml"
    return sandbox if sandbox.exists() else repo_root() / "deployments" / "alert-routes.yaml"


def receiver_component(state_dir: Path, ports: SandboxPorts, token: str | None) -> Component:
    state = Path(state_dir).resolve()
    (state / "receiver").mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{ports.receiver}"
    env = runbook_env(state, ports)
    if token:
        env["K8S_RUNBOOKS_RECEIVER_TOKEN"] = token
    return Component(
        name="receiver", port=ports.receiver, port_setting="K8S_RUNBOOKS_SANDBOX_RECEIVER_PORT",
        url=url, health_url=f"{url}/healthz",
        command=[sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--host", "127.0.0.1",
                 "--port", str(ports.receiver), "--routes", str(receiver_routes()),
                 "--spool", str(state / "receiver" / "spool.sqlite3")],
        env=env, marker="k8s_runbooks_prefect.alerts.server", timeout_s=60, cwd=repo_root(),
    )
