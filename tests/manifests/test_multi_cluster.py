"""One installation, several clusters: a runbook's `kube_context` selects the kubeconfig context every
Kubernetes call of the run uses. Two sandbox cluster processes (free ports, random pod subnets), one
kubeconfig with a context for each; the same real task reads a different Deployment in each, directly,
from a Prefect flow, and from a task submitted to Prefect's thread pool."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from flows.params import HighLatencyParams, IncidentParams, PodCrashParams
from k8s_runbooks.errors import ConfigError
from k8s_runbooks.kube.client import get_kube, kube_context, reset_clients
from k8s_runbooks.kube.pods import read_deployment
from k8s_runbooks.sandbox.kubeconfig import kubeconfig_dict
from k8s_runbooks.settings import Settings, get_settings

pytestmark = pytest.mark.integration

CONTEXTS = {"cluster-a": 1, "cluster-b": 3}  # context -> replicas of shop/web in that cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_cluster(state_dir: Path, used_subnets: set[str]) -> tuple[subprocess.Popen[bytes], str]:
    subnet = random.choice([f"127.{n}" for n in range(2, 251) if f"127.{n}" not in used_subnets])
    used_subnets.add(subnet)
    port = _free_port()
    log = open(state_dir / "cluster.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(state_dir), "--port", str(port),
         "--pod-subnet", subnet, "--no-runtime"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, state_dir: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cluster exited: {(state_dir / 'cluster.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"cluster at {url} not ready after 60 s")


def _deployment(replicas: int) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "sandbox/pause:1"}]}}}}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kubeconfig with two contexts, each reaching its own cluster (current context: cluster-a)."""
    procs: list[subprocess.Popen[bytes]] = []
    subnets: set[str] = set()
    merged: dict[str, list[object]] = {"clusters": [], "users": [], "contexts": []}
    try:
        started = []
        for name in CONTEXTS:
            state = tmp_path_factory.mktemp(name)
            proc, url = _start_cluster(state, subnets)
            procs.append(proc)
            started.append((name, proc, url, state))
        for name, proc, url, state in started:
            _wait_ready(proc, url, state)
            one = kubeconfig_dict(url, name)
            for key in merged:
                merged[key] += one[key]  # type: ignore[operator]
            api = k8s_config.new_client_from_config_dict(one)
            k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "shop"}})
            k8s.AppsV1Api(api).create_namespaced_deployment("shop", _deployment(CONTEXTS[name]))
        path = tmp_path_factory.mktemp("kubeconfig") / "config"
        path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **merged, "current-context": "cluster-a"}))
        yield path
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def settings_env(kubeconfig: Path) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("K8S_RUNBOOKS_KUBECONFIG", "K8S_RUNBOOKS_KUBE_CONTEXT")}
    os.environ["K8S_RUNBOOKS_KUBECONFIG"] = str(kubeconfig)
    os.environ.pop("K8S_RUNBOOKS_KUBE_CONTEXT", None)
    get_settings.cache_clear()
    reset_clients()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    reset_clients()


def _replicas() -> int:
    return read_deployment(get_kube(), "shop", "web").spec.replicas


def test_each_context_reaches_its_own_cluster(settings_env: None) -> None:
    assert _replicas() == CONTEXTS["cluster-a"]  # no run context: the kubeconfig's current context
    for name, replicas in CONTEXTS.items():
        with kube_context(name):
            assert _replicas() == replicas, name
    with kube_context("cluster-b"):
        with kube_context(None):  # a run without kube_context keeps the enclosing/default one
            assert _replicas() == CONTEXTS["cluster-b"]
    assert _replicas() == CONTEXTS["cluster-a"]


def test_a_run_context_overrides_the_installation_default(kubeconfig: Path, settings_env: None) -> None:
    default_b = Settings(kubeconfig=kubeconfig, kube_context="cluster-b")
    assert read_deployment(get_kube(default_b), "shop", "web").spec.replicas == CONTEXTS["cluster-b"]
    with kube_context("cluster-a"):
        assert read_deployment(get_kube(default_b), "shop", "web").spec.replicas == CONTEXTS["cluster-a"]


def test_an_unknown_context_is_a_config_error_listing_the_contexts(settings_env: None) -> None:
    with kube_context("cluster-z"), pytest.raises(ConfigError) as info:
        get_kube()
    assert "cluster-z" in str(info.value) and "cluster-a, cluster-b" in (info.value.hint or "")


@pytest.mark.slow  # starts a Prefect test server
def test_the_context_follows_a_flow_into_its_tasks(settings_env: None) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from tasks.pods import workload_status

    @flow
    def across(contexts: list[str]) -> dict[str, list[int]]:
        out = {}
        for name in contexts:
            with kube_context(name):
                direct = workload_status("shop", "web").replicas
                submitted = workload_status.submit("shop", "web").result().replicas
            out[name] = [direct, submitted]
        return out

    with prefect_test_harness(server_startup_timeout=120):
        result = across(["cluster-b", "cluster-a"])
    assert result == {name: [replicas, replicas] for name, replicas in CONTEXTS.items()}


def test_every_runbook_takes_a_kube_context() -> None:
    for model in (PodCrashParams, HighLatencyParams, IncidentParams):
        field = model.model_fields["kube_context"]
        assert field.default is None and "several clusters" in (field.description or "")
    p = PodCrashParams(namespace="shop", deployment="web", kube_context="gke_my-project_europe-west1_prod")
    assert p.kube_context == "gke_my-project_europe-west1_prod"
    with pytest.raises(ValueError):
        PodCrashParams(namespace="shop", deployment="web", kube_context="prod; rm -rf")
