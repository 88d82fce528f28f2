"""Shared fixtures: one sandbox (cluster, Prometheus, Alertmanager, Pushgateway, Prefect) per test session.

The sandbox runs in a temporary state dir on free ports with a random pod subnet, so several test runs can
share the machine. Binaries are extracted once into a tools dir shared across runs
(`$K8S_RUNBOOKS_SANDBOX_TOOLS_DIR`, default `<repo>/.sandbox/tools/bin`).

Set `K8S_RUNBOOKS_TEST_KUBECONFIG` to run against a real cluster instead: the `sandbox` fixture then
describes that cluster (URLs from the usual settings) and sandbox-only tests skip. (A plain `$KUBECONFIG`
is deliberately not used: after `eval "$(k8s-runbooks sandbox env)"` it points at the developer's sandbox,
and tests would inject faults into it.)
"""

from __future__ import annotations

import os
import tempfile
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "k8s_runbooks_cli"]
os.environ.setdefault("K8S_RUNBOOKS_SANDBOX_TOOLS_DIR", str(REPO / ".sandbox" / "tools" / "bin"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (CI: -n 2) must not share ~/.prefect (profiles, the ephemeral server's SQLite file).
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"prefect-home-{os.environ['PYTEST_XDIST_WORKER']}-")
REAL_KUBECONFIG = os.environ.get("K8S_RUNBOOKS_TEST_KUBECONFIG")
PORT_SETTINGS = {
    "api": "K8S_RUNBOOKS_SANDBOX_API_PORT",
    "prometheus": "K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT",
    "alertmanager": "K8S_RUNBOOKS_SANDBOX_ALERTMANAGER_PORT",
    "pushgateway": "K8S_RUNBOOKS_SANDBOX_PUSHGATEWAY_PORT",
    "prefect": "K8S_RUNBOOKS_SANDBOX_PREFECT_PORT",
    "receiver": "K8S_RUNBOOKS_SANDBOX_RECEIVER_PORT",
    "chatops": "K8S_RUNBOOKS_SANDBOX_CHATOPS_PORT",
    "postgres": "K8S_RUNBOOKS_SANDBOX_POSTGRES_PORT",
}


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
    """A random 127.X pod subnet nobody on the machine listens in yet (the other xdist worker picks its own; the
    kubelet also skips any address already taken, should both pick the same one)."""
    import psutil

    used = {c.laddr.ip.split(".")[1] for c in psutil.net_connections(kind="inet4")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip.startswith("127.")}
    return f"127.{random.choice([x for x in range(2, 251) if str(x) not in used])}"


@dataclass
class Sandbox:
    kubeconfig: Path
    api_url: str
    prometheus_url: str
    alertmanager_url: str
    pushgateway_url: str
    prefect_api_url: str | None
    state_dir: Path | None  # None: a real cluster, not a sandbox
    env: dict[str, str] = field(default_factory=dict)  # env for subprocesses (CLI, kubectl) using this sandbox

    @property
    def is_sandbox(self) -> bool:
        return self.state_dir is not None

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        extra = ["--state-dir", str(self.state_dir)] if self.state_dir and args and args[0] == "sandbox" else []
        result = subprocess.run([*CLI, *args, *extra], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


def sandbox_env(state_dir: Path, ports: dict[str, int], pod_subnet: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_")) and k != "KUBECONFIG"}
    env["K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"] = os.environ["K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"]
    env.update({PORT_SETTINGS[name]: str(port) for name, port in ports.items()})
    env["K8S_RUNBOOKS_SANDBOX_POD_SUBNET"] = pod_subnet
    # CI's Postgres step runs the deployment and alert-path tests with Postgres under the sandbox's Prefect.
    if os.environ.get("K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE"):
        env["K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE"] = os.environ["K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE"]
    env["K8S_RUNBOOKS_SANDBOX_STATE_DIR"] = str(state_dir)
    env["K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES"] = str(REPO / "tests" / "alert-routes.test.yaml")
    env["KUBECONFIG"] = str(state_dir / "kubeconfig")
    # Runbooks and drills run as the least-privilege ServiceAccount of deployments/k8s/base/rbac.yaml (the sandbox
    # enforces RBAC); kubectl and the tests' own set-up use KUBECONFIG, the admin.
    env["K8S_RUNBOOKS_KUBECONFIG"] = str(account_kubeconfig_path(state_dir))
    env["K8S_RUNBOOKS_PROMETHEUS_URL"] = f"http://127.0.0.1:{ports['prometheus']}"
    env["K8S_RUNBOOKS_ALERTMANAGER_URL"] = f"http://127.0.0.1:{ports['alertmanager']}"
    env["K8S_RUNBOOKS_PUSHGATEWAY_URL"] = f"http://127.0.0.1:{ports['pushgateway']}"
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{ports['prefect']}/api"
    return env


def start_sandbox(state_dir: Path, *extra: str) -> Sandbox:
    """`k8s-runbooks sandbox up` in `state_dir` on free ports; the caller must call stop_sandbox."""
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS))))
    env = sandbox_env(state_dir, ports, random_pod_subnet())
    box = Sandbox(
        kubeconfig=state_dir / "kubeconfig", api_url=f"http://127.0.0.1:{ports['api']}",
        prometheus_url=env["K8S_RUNBOOKS_PROMETHEUS_URL"], alertmanager_url=env["K8S_RUNBOOKS_ALERTMANAGER_URL"],
        pushgateway_url=env["K8S_RUNBOOKS_PUSHGATEWAY_URL"],
        prefect_api_url=None if "--no-prefect" in extra else env["PREFECT_API_URL"],
        state_dir=state_dir, env=env,
    )
    try:
        box.cli("sandbox", "up", *extra, timeout=600)
    except BaseException:
        stop_sandbox(box)
        raise
    return box


def stop_sandbox(box: Sandbox) -> None:
    box.cli("sandbox", "down", check=False, timeout=120)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The session's cluster: a full sandbox, or the real cluster of K8S_RUNBOOKS_TEST_KUBECONFIG."""
    if REAL_KUBECONFIG:
        from k8s_runbooks.settings import Settings

        s = Settings()
        yield Sandbox(kubeconfig=Path(REAL_KUBECONFIG), api_url="", prometheus_url=s.prometheus_url,
                      alertmanager_url=s.alertmanager_url, pushgateway_url=s.pushgateway_url,
                      prefect_api_url=os.environ.get("PREFECT_API_URL"), state_dir=None,
                      env={**os.environ, "KUBECONFIG": REAL_KUBECONFIG})
        return
    box = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    try:
        yield box
    finally:
        stop_sandbox(box)


@pytest.fixture(scope="session")
def sandbox_only(sandbox: Sandbox) -> Sandbox:
    """The session sandbox; skips the test against a real cluster."""
    if not sandbox.is_sandbox:
        pytest.skip("sandbox-only test (K8S_RUNBOOKS_TEST_KUBECONFIG points at a real cluster)")
    return sandbox
