"""Each cluster fault of `k8s-runbooks sandbox fault`, live: injected through the guard into a shop deployment of
a whole in-process cluster, its symptom produced by the cluster's own machinery, and `clear` putting back
exactly what was there (same ReplicaSet, nodes, quota, selector, replica count)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from k8s_runbooks.guard import read_audit
from k8s_runbooks.sandbox import demo_workload, supervisor
from k8s_runbooks.sandbox.settings import SandboxSettings
from k8s_runbooks.settings import Settings
from tests.conftest import random_pod_subnet
from tests.helpers.inproc_cluster import InProcCluster, inproc_cluster
from tests.helpers.wait import wait_for

DEPLOY = "checkout"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcCluster]:
    with inproc_cluster(tmp_path_factory.mktemp("faults"), random_pod_subnet()) as cluster:
        yield cluster


@pytest.fixture
def shop(live: InProcCluster) -> Iterator[tuple[str, supervisor.SandboxConfig]]:
    """A fresh namespace with checkout (2 replicas) and its Service, ready."""
    ns = f"fk-{uuid.uuid4().hex[:6]}"
    demo_workload.ensure_workload(live.kubeconfig, ns, {DEPLOY: 2})
    demo_workload.wait_ready(live.kubeconfig, ns, [DEPLOY], timeout_s=60)
    yield ns, supervisor.SandboxConfig.from_settings(SandboxSettings(), live.state_dir)
    live.store.delete("namespaces", None, ns)


def _rs_hash(live: InProcCluster, ns: str) -> str:
    dep = live.store.get("deployments", ns, DEPLOY)
    rss = [r for r in live.store.list("replicasets", ns)[0] if r["spec"]["replicas"] > 0]
    assert len(rss) == 1, f"one active ReplicaSet expected: {[r['metadata']['name'] for r in rss]}"
    assert dep["status"].get("readyReplicas") == dep["spec"]["replicas"]
    return rss[0]["metadata"]["labels"]["pod-template-hash"]


def _inject_and_clear(live: InProcCluster, ns: str, cfg: supervisor.SandboxConfig, kind: str,
                      symptom: Any, *, same_template: bool = True) -> Any:
    before = _rs_hash(live, ns)
    done = supervisor.fault(cfg, kind, ns, DEPLOY)
    assert done["outcome"].startswith(f"{ns}/{DEPLOY}: {kind} fault:")
    assert demo_workload.active_cluster_faults(live.kubeconfig, ns, DEPLOY) == [kind]
    seen = wait_for(symptom, timeout=40, what=f"the {kind} symptom")
    cleared = supervisor.fault(cfg, "clear", ns, DEPLOY)
    assert cleared["outcome"] == f"{ns}/{DEPLOY}: cleared {kind}"
    assert demo_workload.active_cluster_faults(live.kubeconfig, ns, DEPLOY) == []
    demo_workload.wait_ready(live.kubeconfig, ns, [DEPLOY], timeout_s=60)
    after = wait_for(lambda: _settled(live, ns), timeout=40, what="one active ReplicaSet")
    if same_template:
        assert after == before, "clear must return the deployment to its original pod template"
    # the sandbox's fault command audits where the runner's runbooks do (its state dir), whatever the cwd
    records = read_audit(settings=Settings(state_dir=cfg.state_dir / "runbooks"))
    assert [(r.action.kind.value, r.decision.value, r.actor) for r in records][-2:] == [
        ("inject_fault", "allowed", "sandbox-cli"), ("remove_fault", "allowed", "sandbox-cli")]
    return seen


def _settled(live: InProcCluster, ns: str) -> str | None:
    try:
        return _rs_hash(live, ns)
    except AssertionError:
        return None


def _waiting(live: InProcCluster, ns: str, reason: str) -> dict[str, Any] | None:
    for p in live.pods(ns, DEPLOY):
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            if (cs["state"].get("waiting") or {}).get("reason") == reason:
                return cs["state"]["waiting"]
    return None


def _event(live: InProcCluster, ns: str, reason: str, pattern: str) -> str | None:
    return next((e["message"] for e in live.events(ns, reason=reason) if re.search(pattern, e["message"])), None)


def _secret_symptom(live: InProcCluster, ns: str) -> tuple[dict[str, Any], list[str]] | None:
    """The recreated pod waiting on the Secret, and the pods of its revision still Ready beside it."""
    waiting = _waiting(live, ns, "CreateContainerConfigError")
    if waiting is None:
        return None
    pods = live.pods(ns, DEPLOY)
    stuck = next(p for p in pods if any((cs["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError"
                                        for cs in p["status"].get("containerStatuses") or []))
    same = stuck["metadata"]["labels"]["pod-template-hash"]
    ready = [p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["pod-template-hash"] == same
             and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
    return (waiting, ready) if ready else None


def test_missing_secret(live, shop) -> None:
    """No Secret in the template: the fault gives it one (a healthy revision), then deletes it and a pod."""
    ns, cfg = shop
    waiting, ready = _inject_and_clear(live, ns, cfg, "missing-secret", lambda: _secret_symptom(live, ns))
    assert waiting["message"] == 'secret "checkout-db-credentials" not found'
    assert len(ready) == 1, "the other pod of the same revision keeps running"
    assert live.store.try_get("secrets", ns, "checkout-db-credentials") is None, "clear removes the Secret it added"


def test_missing_secret_the_workload_already_reads(live, shop) -> None:
    """The template reads a Secret of its own: that one is deleted (a copy kept in the cluster) and put back."""
    ns, cfg = shop
    live.kubectl("create", "secret", "generic", "api-token", "-n", ns, "--from-literal=token=s3cr3t-value")
    live.kubectl("label", "secret", "api-token", "-n", ns, "team=shop")
    live.kubectl("set", "env", f"deployment/{DEPLOY}", "-n", ns, "--from=secret/api-token")
    demo_workload.wait_ready(live.kubeconfig, ns, [DEPLOY], timeout_s=60)
    wait_for(lambda: _settled(live, ns), timeout=40, what="the Secret's revision rolled out")
    original = live.store.get("secrets", ns, "api-token")
    waiting, _ready = _inject_and_clear(live, ns, cfg, "missing-secret", lambda: _secret_symptom(live, ns))
    assert waiting["message"] == 'secret "api-token" not found'
    back = live.store.get("secrets", ns, "api-token")
    assert back["data"] == original["data"] and back["metadata"]["labels"] == {"team": "shop"}
    assert live.store.try_get("secrets", ns, "api-token-fault-backup") is None


def test_image_not_found(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "image-not-found",
                                lambda: _event(live, ns, "Failed", r"^Failed to pull image"))
    assert message.startswith('Failed to pull image "sandbox/shop:1x": rpc error: code = NotFound')


def test_node_selector(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "node-selector", lambda: _event(live, ns, "FailedScheduling", "."))
    assert message.startswith("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


def test_taint(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "taint", lambda: _event(live, ns, "FailedScheduling", "."),
                                same_template=False)  # the fault restarted the deployment, as the person did
    assert message.startswith("0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: maintenance}.")
    assert all(not (n.get("spec") or {}).get("taints") for n in live.store.list("nodes")[0])


def test_quota(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "quota", lambda: _event(live, ns, "FailedCreate", "exceeded quota"),
                                same_template=False)
    assert re.search(r'is forbidden: exceeded quota: compute-quota, requested: requests.cpu=50m, '
                     r"used: requests.cpu=100m, limited: requests.cpu=100m$", message)
    assert live.store.list("resourcequotas", ns)[0] == []


def test_liveness_port(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "liveness-port", lambda: _event(live, ns, "Killing", "liveness"))
    assert message == f"Container {DEPLOY} failed liveness probe, will be restarted"


def test_readiness_port(live, shop) -> None:
    ns, cfg = shop
    message = _inject_and_clear(live, ns, cfg, "readiness-port",
                                lambda: _event(live, ns, "Unhealthy", r":8081/healthz.*connection refused"))
    assert message.startswith("Readiness probe failed: Get ")


def test_service_selector(live, shop) -> None:
    ns, cfg = shop

    def no_endpoints() -> bool:
        ep = live.store.try_get("endpoints", ns, DEPLOY)
        return ep is not None and ep.get("subsets") == []
    _inject_and_clear(live, ns, cfg, "service-selector", no_endpoints)
    svc = live.store.get("services", ns, DEPLOY)
    assert svc["spec"]["selector"] == {"app": DEPLOY} and "k8s-runbooks.io/fault-undo" not in svc["metadata"].get(
        "annotations", {})
    assert wait_for(lambda: (live.store.get("endpoints", ns, DEPLOY).get("subsets") or [{}])[0].get("addresses"))


def test_zero_replicas(live, shop) -> None:
    ns, cfg = shop
    _inject_and_clear(live, ns, cfg, "zero-replicas", lambda: not live.pods(ns, DEPLOY))
    assert live.store.get("deployments", ns, DEPLOY)["spec"]["replicas"] == 2


def test_the_guard_refuses_a_namespace_not_open_to_drills(live, shop) -> None:
    ns, cfg = shop
    live.store.mutate("namespaces", None, ns, lambda o: o["metadata"]["labels"].pop("k8s-runbooks.io/drills"))
    with pytest.raises(supervisor.SandboxError, match="not labelled k8s-runbooks.io/drills=allowed"):
        supervisor.fault(cfg, "taint", ns, DEPLOY)
    assert all(not (n.get("spec") or {}).get("taints") for n in live.store.list("nodes")[0])
