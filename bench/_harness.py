"""What the benchmarks share: free ports, sandbox pieces started with the supervisor's own helpers (and
always stopped), machine facts, and the JSON output file.

Every benchmark starts what it needs in a fresh temporary state dir on free ports with a random pod
subnet, so it can run while other engineers run tests on the same machine.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "k8s_runbooks_cli"]
PORT_SETTINGS = {
    "api": "K8S_RUNBOOKS_SANDBOX_API_PORT",
    "prometheus": "K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT",
    "alertmanager": "K8S_RUNBOOKS_SANDBOX_ALERTMANAGER_PORT",
    "pushgateway": "K8S_RUNBOOKS_SANDBOX_PUSHGATEWAY_PORT",
    "prefect": "K8S_RUNBOOKS_SANDBOX_PREFECT_PORT",
    "receiver": "K8S_RUNBOOKS_SANDBOX_RECEIVER_PORT",
}
os.environ.setdefault("K8S_RUNBOOKS_SANDBOX_TOOLS_DIR", str(REPO / ".sandbox" / "tools" / "bin"))
os.environ.setdefault("DO_NOT_TRACK", "1")


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def random_pod_subnet() -> str:
    return f"127.{random.randint(2, 250)}"


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "mem_gib": mem, "python": platform.python_version(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_out(path: str | None, data: dict[str, Any]) -> None:
    data = {"machine": machine(), **data}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "median": round(statistics.median(ordered), 4), "min": round(ordered[0], 4),
            "max": round(ordered[-1], 4)}


@contextmanager
def state_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ports() -> Any:
    from k8s_runbooks.sandbox.launchers import SandboxPorts

    return SandboxPorts(**dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)))))


@dataclass
class Cluster:
    url: str
    kubeconfig: Path
    pid: int
    state_dir: Path


@contextmanager
def cluster(directory: Path) -> Iterator[Cluster]:
    """The sandbox cluster process alone (API + controllers + kubelet), stopped with its pods on exit."""
    from k8s_runbooks.sandbox import launchers, supervisor

    comp = launchers.cluster_component(directory, _ports(), random_pod_subnet())
    pid = launchers.start(directory, comp)
    try:
        launchers.wait_healthy(directory, comp, pid)
        yield Cluster(url=comp.url, kubeconfig=directory / "kubeconfig", pid=pid, state_dir=directory)
    finally:
        launchers.stop_pid(pid, grace_s=30)
        supervisor.stop_leftover_pods(directory)


@contextmanager
def prefect_server(directory: Path, existing: str | None = None) -> Iterator[str]:
    """The sandbox's Prefect server (SQLite, BEGIN IMMEDIATE) on a free port; yields its API URL.
    `existing`: the API URL of a server already running (nothing is started or stopped)."""
    from k8s_runbooks.sandbox import launchers

    if existing:
        yield existing
        return

    comp = launchers.prefect_component(directory, _ports())
    pid = launchers.start(directory, comp)
    try:
        launchers.wait_healthy(directory, comp, pid)
        yield comp.url
    finally:
        launchers.stop_pid(pid)


@dataclass
class Sandbox:
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        extra = ["--state-dir", str(self.state_dir)] if args and args[0] == "sandbox" else []
        return subprocess.run([*CLI, *args, *extra], capture_output=True, text=True, env=self.env, timeout=timeout)


@contextmanager
def full_sandbox(directory: Path, extra_env: dict[str, str] | None = None) -> Iterator[Sandbox]:
    """`k8s-runbooks sandbox up --no-demo` (cluster, Prometheus, Alertmanager, Pushgateway, Prefect, runner,
    receiver) on free ports; `sandbox down` on exit. `Sandbox.env` is the environment to act on it.
    `extra_env`: more settings for `sandbox up` and its components (e.g. K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES)."""
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_")) and k != "KUBECONFIG"}
    env["K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"] = os.environ["K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"]
    env.update({PORT_SETTINGS[name]: str(port) for name, port in ports.items()})
    env["K8S_RUNBOOKS_SANDBOX_POD_SUBNET"] = random_pod_subnet()
    env["K8S_RUNBOOKS_SANDBOX_STATE_DIR"] = str(directory)
    env["K8S_RUNBOOKS_STATE_DIR"] = str(directory / "runbooks-state")
    env["K8S_RUNBOOKS_REPORTS_DIR"] = str(directory / "reports")
    env["KUBECONFIG"] = env["K8S_RUNBOOKS_KUBECONFIG"] = str(directory / "kubeconfig")
    env["K8S_RUNBOOKS_PROMETHEUS_URL"] = f"http://127.0.0.1:{ports['prometheus']}"
    env["K8S_RUNBOOKS_ALERTMANAGER_URL"] = f"http://127.0.0.1:{ports['alertmanager']}"
    env["K8S_RUNBOOKS_PUSHGATEWAY_URL"] = f"http://127.0.0.1:{ports['pushgateway']}"
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{ports['prefect']}/api"
    env["DO_NOT_TRACK"] = "1"
    env.update(extra_env or {})
    box = Sandbox(state_dir=directory, env=env)
    try:
        result = box.cli("sandbox", "up", "--no-demo")
        if result.returncode != 0:
            raise RuntimeError(f"sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        yield box
    finally:
        box.cli("sandbox", "down", timeout=180)


def get_json(client: Any, url: str, **params: Any) -> Any:
    """GET with a few retries: the sandbox's SQLite Prefect server answers 503 when its database is locked."""
    return _with_retries(lambda: client.get(url, params=params or None), url)


def post_json(client: Any, url: str, body: dict[str, Any]) -> Any:
    """POST (a Prefect `.../filter` read) with the same retries as `get_json`."""
    return _with_retries(lambda: client.post(url, json=body), url)


def _with_retries(send: Any, url: str) -> Any:
    import httpx

    delay = 0.2
    for attempt in range(5):
        try:
            resp = send()
            if resp.status_code < 500 and resp.status_code != 429:
                resp.raise_for_status()
                return resp.json()
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if isinstance(exc, httpx.HTTPStatusError) or attempt == 4:
                raise
        time.sleep(delay)
        delay *= 2
    raise RuntimeError(f"{url}: still failing after 5 attempts")


def pct(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation (q=0.95: p95)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """n, median, p95, min, max of `values` (seconds or ms, as given)."""
    return {"n": len(values), "median": round(statistics.median(values), digits), "p95": round(pct(values, 0.95), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}
