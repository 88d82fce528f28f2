"""The guard's cooldowns and pod budgets live in the cluster (Leases, compare-and-swap), not in a local directory.

Every entry point — a CLI from any directory, the runner, another kube context for the same cluster — reads
and writes the same Lease, so a second remediation of one workload is refused wherever it comes from; racing
entry points give exactly one action; another cluster keeps its own cooldowns.
"""

from __future__ import annotations

import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_runbooks.guard import Guard, read_audit
from k8s_runbooks.guard_state import BUDGET_LEASE, cooldown_lease_name
from k8s_runbooks.kube.client import reset_clients
from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef
from k8s_runbooks.settings import Settings
from tests.kube.conftest import Cluster, _free_port, _healthy, deployment_body, wait_for


def _restart(ns: str, name: str = "web") -> Action:
    return Action(kind=ActionKind.rollout_restart, target=WorkloadRef(namespace=ns, name=name), reason="test")


def _lease(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """The Lease as `kubectl get lease` shows it (the kubectl wheel in the venv)."""
    out = subprocess.run([str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "get",
                          "lease", "-n", ns, name, "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def _alias_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """The same cluster under another context and user name (a second kubeconfig a colleague might have)."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cfg["contexts"][0]["name"] = cfg["current-context"] = "gke_prod_europe-west1_shop"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_cooldown_is_one_lease_every_entry_point_sees(cluster: Cluster, settings: Settings, ns: str,
                                                          tmp_path: Path) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    first = Guard(settings.model_copy(update={"state_dir": tmp_path / "dir-a"})).execute(_restart(ns), "auto", "alice", "run-a")
    assert first.executed, first.detail

    lease = _lease(cluster, ns, cooldown_lease_name("Deployment", "web"))
    assert lease["spec"]["holderIdentity"] == "run-a" and lease["spec"]["leaseDurationSeconds"] == 300
    assert lease["metadata"]["annotations"]["k8s-runbooks.io/action"] == "rollout_restart"

    # Another directory (its own state dir) and another kubeconfig context for the same cluster: both refused.
    other_dir = Guard(settings.model_copy(update={"state_dir": tmp_path / "dir-b"}))
    refused = other_dir.execute(_restart(ns), "auto", "bob", "run-b")
    assert refused.decision is Decision.refused and "cooldown" in refused.detail and "run-a" in refused.detail
    alias = settings.model_copy(update={"state_dir": tmp_path / "dir-c",
                                        "kubeconfig": _alias_kubeconfig(cluster, tmp_path / "alias.yaml")})
    reset_clients()
    refused = Guard(alias).execute(_restart(ns), "auto", "carol", "run-c")
    assert refused.decision is Decision.refused and "cooldown" in refused.detail, refused.detail
    # Nothing of the shared state is in the directories any more: only each one's own audit record.
    assert sorted(p.name for p in (tmp_path / "dir-b").iterdir()) == ["audit.jsonl"]
    assert [r.decision for r in read_audit(settings=settings.model_copy(update={"state_dir": tmp_path / "dir-b"}))] == [
        Decision.refused]


def test_the_run_budget_is_kept_in_the_namespace(cluster: Cluster, settings: Settings, ns: str, tmp_path: Path) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.create_deployment(ns, "api", 2)
    cluster.wait_ready(ns, "web", 2)
    cluster.wait_ready(ns, "api", 2)
    budget = settings.model_copy(update={"max_pods_per_run": 3, "cooldown_seconds": 0})
    assert Guard(budget.model_copy(update={"state_dir": tmp_path / "a"})).execute(_restart(ns), "auto", "a", "run-x").executed
    # The same run, continued by another process elsewhere: 2 pods used, 2 more would exceed 3.
    again = Guard(budget.model_copy(update={"state_dir": tmp_path / "b"})).execute(_restart(ns, "api"), "auto", "a", "run-x")
    assert again.decision is Decision.refused and "max_pods_per_run=3" in again.detail
    lease = _lease(cluster, ns, BUDGET_LEASE)
    assert '"run-x":{"at":' in lease["metadata"]["annotations"]["k8s-runbooks.io/pods-touched"]


def _race(kubeconfig: str, state_dir: str, ns: str, run: str, barrier: Any, results: Any) -> None:
    settings = Settings(kubeconfig=Path(kubeconfig), state_dir=Path(state_dir), cooldown_seconds=300)
    guard = Guard(settings)
    guard.kube  # noqa: B018 - build the client before the start line, so the race is on the writes
    barrier.wait(60)
    result = guard.execute(_restart(ns), "auto", run, run)
    results.put((run, result.executed, result.detail))


def test_racing_entry_points_give_one_action(cluster: Cluster, settings: Settings, ns: str, tmp_path: Path) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    before = cluster.apps.read_namespaced_deployment("web", ns).metadata.generation
    ctx = get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(cluster.kubeconfig), str(tmp_path / f"dir-{i}"), ns, f"run-{i}",
                                             barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    executed = [o for o in outcomes if o[1]]
    assert len(executed) == 1, outcomes
    assert all("cooldown" in detail and executed[0][0] in detail for run, done, detail in outcomes if not done), outcomes
    assert cluster.apps.read_namespaced_deployment("web", ns).metadata.generation == before + 1  # one restart
    assert _lease(cluster, ns, cooldown_lease_name("Deployment", "web"))["spec"]["holderIdentity"] == executed[0][0]


@pytest.fixture
def second_cluster(tmp_path: Path) -> Any:
    """Another cluster (API only: the guard needs the Deployment object, not its pods)."""
    state_dir, port = tmp_path / "cluster-b", _free_port()
    state_dir.mkdir()
    log = open(state_dir / "cluster.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(state_dir),
                             "--port", str(port), "--no-runtime"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or _healthy(f"http://127.0.0.1:{port}"), 30, 0.2, "second API")
        assert proc.poll() is None, (state_dir / "cluster.log").read_text()
        yield state_dir / "kubeconfig"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_another_cluster_keeps_its_own_cooldown(cluster: Cluster, settings: Settings, ns: str, second_cluster: Path,
                                                tmp_path: Path) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    api = k8s_config.new_client_from_config(str(second_cluster))
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    k8s.AppsV1Api(api).create_namespaced_deployment(ns, deployment_body("web", 2))
    here = Guard(settings)
    assert here.execute(_restart(ns), "auto", "alice", "run-1").executed
    reset_clients()
    there = Guard(settings.model_copy(update={"kubeconfig": second_cluster}))
    assert there.execute(_restart(ns), "auto", "alice", "run-2").executed  # same ns/name, another cluster
    assert there.execute(_restart(ns), "auto", "bob", "run-3").decision is Decision.refused  # its own cooldown
    reset_clients()
    assert Guard(settings).execute(_restart(ns), "auto", "bob", "run-3").decision is Decision.refused
