"""A sandbox cluster process of our own (free port, random pod subnet, tmp state dir) with namespace `shop`
(`checkout` x3, `payments` x2) created through the official client, and a Prefect test harness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks.kube.client import reset_clients
from k8s_runbooks.settings import Settings, get_settings
from tests.conftest import random_pod_subnet

NS = "shop"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def deployment_body(name: str, replicas: int, env: dict[str, str] | None = None, memory_limit: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "sandbox/shop:1",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    }
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"sandbox.k8s-runbooks.io/probe-period-ms": "200"}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 2},
            },
        },
    }


@dataclass
class Cluster:
    api_url: str
    kubeconfig: Path
    state_dir: Path
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def create_deployment(self, ns: str, name: str, replicas: int, **kw: Any) -> None:
        self.apps.create_namespaced_deployment(ns, deployment_body(name, replicas, **kw))

    def ready(self, ns: str, name: str) -> int:
        return self.apps.read_namespaced_deployment(name, ns).status.ready_replicas or 0

    def wait_ready(self, ns: str, name: str, replicas: int, timeout: float = 90) -> None:
        try:
            wait_for(lambda: self.ready(ns, name) >= replicas, timeout, what=f"{ns}/{name} {replicas} ready")
        except AssertionError as exc:  # say why: the pods' IPs, states and restarts
            pods = [(p.metadata.name, p.status.pod_ip, [(c.state.to_dict(), c.restart_count)
                                                        for c in p.status.container_statuses or []])
                    for p in self.core.list_namespaced_pod(ns).items if p.metadata.name.startswith(f"{name}-")]
            raise AssertionError(f"{exc}; pods: {pods}") from None

    def faults(self, **body: Any) -> None:
        httpx.post(f"{self.api_url}/sandbox/faults", json=body, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.api_url}/sandbox/faults", timeout=5).raise_for_status()

    def reset_audit(self) -> None:
        httpx.delete(f"{self.api_url}/sandbox/audit", timeout=5).raise_for_status()

    def requests(self, verb: str, resource: str, namespace: str) -> int:
        data = httpx.get(f"{self.api_url}/sandbox/audit", timeout=5).json()
        return sum(r["count"] for r in data["requests"]
                   if r["verb"] == verb and r["resource"] == resource and r["namespace"] == namespace and not r["subresource"])


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("kube-cluster")
    port = _free_port()
    log = open(state_dir / "cluster.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(state_dir), "--port", str(port),
         "--pod-subnet", random_pod_subnet()],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        api_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or _healthy(api_url), 30, 0.2, "sandbox API")
        assert proc.poll() is None, (state_dir / "cluster.log").read_text()
        kubeconfig = state_dir / "kubeconfig"
        api = k8s_config.new_client_from_config(str(kubeconfig))
        box = Cluster(api_url, kubeconfig, state_dir, k8s.AppsV1Api(api), k8s.CoreV1Api(api))
        box.create_namespace(NS)
        box.create_deployment(NS, "checkout", 3)
        box.create_deployment(NS, "payments", 2)
        box.wait_ready(NS, "checkout", 3)
        box.wait_ready(NS, "payments", 2)
        yield box
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def kube_env(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the settings (and so every core function and task) at our cluster; state dir per session."""
    state = tmp_path_factory.mktemp("runbook-state")
    saved = {k: os.environ.get(k) for k in ("K8S_RUNBOOKS_KUBECONFIG", "K8S_RUNBOOKS_STATE_DIR", "K8S_RUNBOOKS_COOLDOWN_SECONDS")}
    os.environ["K8S_RUNBOOKS_KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ["K8S_RUNBOOKS_STATE_DIR"] = str(state)
    os.environ["K8S_RUNBOOKS_COOLDOWN_SECONDS"] = "0"
    get_settings.cache_clear()
    reset_clients()
    yield state
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    reset_clients()


@pytest.fixture
def settings(kube_env: Path, tmp_path: Path) -> Settings:
    """Settings for one test: our cluster, a fresh state dir, a real cooldown."""
    return Settings(kubeconfig=get_settings().kubeconfig, state_dir=tmp_path / "state", cooldown_seconds=300)


@pytest.fixture
def ns(cluster: Cluster) -> str:
    """A fresh namespace for tests that change workloads (the shared `shop` stays as created)."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(name)
    return name


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    # Telemetry writes a session row at server start that races the harness's own writes ("database is locked").
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def no_faults(cluster: Cluster) -> Iterator[Cluster]:
    cluster.clear_faults()
    yield cluster
    cluster.clear_faults()
