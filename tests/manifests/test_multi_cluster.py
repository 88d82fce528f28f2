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


def test_guard_cooldowns_are_per_cluster(settings_env: None, tmp_path: Path) -> None:
    """The same namespace/name in two clusters are two workloads: acting on one does not put the other in
    cooldown, while a second run on the same cluster is still refused."""
    from k8s_runbooks.guard import Guard, read_audit
    from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef

    settings = get_settings().model_copy(update={"state_dir": str(tmp_path), "cooldown_seconds": 300})
    restart = Action(kind=ActionKind.rollout_restart, target=WorkloadRef(namespace="shop", name="web"), reason="test")
    with kube_context("cluster-a"):
        first = Guard(settings).execute(restart, "auto", "alice", "run-a")
    with kube_context("cluster-b"):
        other_cluster = Guard(settings).execute(restart, "auto", "bob", "run-b")
    with kube_context("cluster-a"):
        again = Guard(settings).execute(restart, "auto", "carol", "run-c")
    assert first.executed and other_cluster.executed, (first.detail, other_cluster.detail)
    assert again.decision is Decision.refused and "cooldown" in again.detail and "run-a" in again.detail
    assert [(a.kube_context, a.decision) for a in read_audit(settings=settings)] == [
        ("cluster-a", Decision.allowed), ("cluster-b", Decision.allowed), ("cluster-a", Decision.refused)]
    for name in CONTEXTS:  # each cluster's Deployment was restarted exactly once
        with kube_context(name):
            annotations = read_deployment(get_kube(), "shop", "web").spec.template.metadata.annotations or {}
        assert "kubectl.kubernetes.io/restartedAt" in annotations, name


@pytest.mark.slow  # starts a Prefect test server
def test_a_drill_runs_on_the_cluster_of_its_kube_context(kubeconfig: Path, settings_env: None, tmp_path: Path) -> None:
    """Only cluster-b's `shop` allows drills and it has 3 replicas (none ready: these clusters run no pods). A drill
    with kube_context=cluster-b passes the guard there and stops at its steady-state check, reading 0/3; the same
    drill on cluster-a is refused by the guard (namespace not labelled). Neither injects anything."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    from flows.drills import drill_pod_crash, scorecard_of
    from k8s_runbooks.drills.model import DrillParams, SteadyState

    with kube_context("cluster-b"):
        k8s.CoreV1Api(get_kube().api_client).patch_namespace(
            "shop", {"metadata": {"labels": {"k8s-runbooks.io/drills": "allowed"}}})
    env = {"K8S_RUNBOOKS_STATE_DIR": str(tmp_path / "state"), "K8S_RUNBOOKS_REPORTS_DIR": str(tmp_path / "reports"),
           "K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS": "0.1", "K8S_RUNBOOKS_PUSHGATEWAY_URL": "http://127.0.0.1:9"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        cards = {}
        with prefect_test_harness(server_startup_timeout=120):
            for name in ("cluster-b", "cluster-a"):
                params = DrillParams(namespace="shop", deployment="web", kube_context=name, response="none",
                                     steady_state=SteadyState(p95_threshold_ms=None, check_alerts=False))
                state = drill_pod_crash(params, return_state=True)
                card = scorecard_of(str(state.state_details.flow_run_id))
                assert card is not None, name
                cards[name] = card
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
    b, a = cards["cluster-b"], cards["cluster-a"]
    assert b.outcome == "aborted" and "0/3 ready" in b.outcome_detail, (b.outcome, b.outcome_detail)
    assert a.outcome == "refused" and "drills" in a.outcome_detail, (a.outcome, a.outcome_detail)
    for name in CONTEXTS:  # nothing injected anywhere
        with kube_context(name):
            container = read_deployment(get_kube(), "shop", "web").spec.template.spec.containers[0]
        assert not [e.name for e in container.env or [] if e.name.startswith("FAULT_")], name
