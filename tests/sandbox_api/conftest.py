"""A sandbox cluster process (API only) on a free port, shared by the tests of this directory."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from kubernetes import client, config

if TYPE_CHECKING:
    from tests.helpers.inproc_cluster import InProcCluster

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    url: str
    port: int
    state_dir: Path
    kubeconfig: Path
    process: subprocess.Popen[bytes]

    def kubectl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.state_dir / "kubecache")}
        proc = subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def popen_kubectl(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.state_dir / "kubecache")}
        return subprocess.Popen([str(KUBECTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("sandbox")
    port = _free_port()
    subnet = f"127.{random.randint(2, 250)}"
    log = open(state_dir / "cluster.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(state_dir), "--port", str(port),
         "--pod-subnet", subnet, "--no-runtime"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox cluster did not start: {(state_dir / 'cluster.log').read_text()}")
            time.sleep(0.1)
        yield Cluster(url, port, state_dir, state_dir / "kubeconfig", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture()
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


class Bodies:
    """Builders of request bodies with the official models."""

    @staticmethod
    def pod(name: str, labels: dict[str, str] | None = None, image: str = "sandbox/pause:1") -> client.V1Pod:
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=image)]),
        )

    @staticmethod
    def deployment(name: str, replicas: int = 2, labels: dict[str, str] | None = None) -> client.V1Deployment:
        labels = labels or {"app": name}
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=replicas,
                selector=client.V1LabelSelector(match_labels={"app": name}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(
                        name="app", image="sandbox/shop:1",
                        env=[client.V1EnvVar(name="A", value="1")],
                        ports=[client.V1ContainerPort(container_port=8080)])]),
                ),
            ),
        )


@pytest.fixture(scope="session")
def bodies() -> type[Bodies]:
    return Bodies


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator["InProcCluster"]:
    """A whole sandbox cluster in this process (API, scheduler, kubelet on three nodes) for the fidelity tests:
    each test works in its own namespace and puts back any node it changes."""
    from tests.conftest import random_pod_subnet
    from tests.helpers.inproc_cluster import inproc_cluster

    with inproc_cluster(tmp_path_factory.mktemp("live"), random_pod_subnet()) as cluster_:
        yield cluster_


@pytest.fixture()
def live_ns(live: "InProcCluster") -> Iterator[str]:
    name = f"f-{uuid.uuid4().hex[:8]}"
    live.store.create("namespaces", {"metadata": {"name": name}})
    yield name
    live.store.delete("namespaces", None, name)
