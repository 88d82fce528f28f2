"""Each containment option live on an in-process cluster, through the guard, and undone:
- a fault behind a feature flag goes quiet when the flag is turned off (the pods re-read the mounted ConfigMap;
  no restart), and comes back when the undo turns it on again;
- traffic redirected to the stable revision: the Service's endpoints hold only its pods, and the restored
  selector brings the others back;
- scale to zero, then back gradually with each step validated (ready, restarts flat), stopping at a step that
  does not validate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from k8s_runbooks import containment
from k8s_runbooks.guard import Guard, read_audit
from k8s_runbooks.kube import workloads
from k8s_runbooks.kube.client import get_kube, reset_clients
from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef
from k8s_runbooks.sandbox import demo_workload
from k8s_runbooks.settings import Settings
from tests.conftest import random_pod_subnet
from tests.helpers.inproc_cluster import InProcCluster, inproc_cluster
from tests.helpers.wait import wait_for

DEPLOY = "checkout"
FLAG = "new-checkout-flow"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcCluster]:
    with inproc_cluster(tmp_path_factory.mktemp("containment"), random_pod_subnet()) as cluster:
        yield cluster
    reset_clients()


@pytest.fixture
def settings(live: InProcCluster, tmp_path: Path) -> Settings:
    return Settings(kubeconfig=live.kubeconfig, kube_context=None, state_dir=tmp_path / "guard", cooldown_seconds=300)


def _shop(live: InProcCluster, replicas: int) -> str:
    ns = f"ct-{uuid.uuid4().hex[:6]}"
    demo_workload.ensure_workload(live.kubeconfig, ns, {DEPLOY: replicas})
    demo_workload.wait_ready(live.kubeconfig, ns, [DEPLOY], timeout_s=60)
    return ns


def _ready_pods(live: InProcCluster, ns: str) -> list[dict]:
    return [p for p in live.pods(ns, DEPLOY)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])]


def _codes(live: InProcCluster, ns: str) -> dict[str, int]:
    """What each ready pod answers on /checkout (pod name -> status code)."""
    return {p["metadata"]["name"]: httpx.get(f"http://{p['status']['podIP']}:8080/checkout", timeout=5).status_code
            for p in _ready_pods(live, ns)}


def _restarts(live: InProcCluster, ns: str) -> dict[str, int]:
    return {p["metadata"]["name"]: sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or [])
            for p in live.pods(ns, DEPLOY)}


def _rolled_out(live: InProcCluster, ns: str, replicas: int) -> bool:
    dep = live.store.get("deployments", ns, DEPLOY)
    st = dep.get("status") or {}
    return (st.get("updatedReplicas") == replicas and st.get("readyReplicas") == replicas and st.get("replicas") == replicas
            and st.get("observedGeneration") == dep["metadata"]["generation"])


def test_a_fault_behind_a_flag_goes_quiet_when_the_flag_is_turned_off(live: InProcCluster, settings: Settings) -> None:
    ns = _shop(live, 2)
    target = WorkloadRef(namespace=ns, name=DEPLOY)
    demo_workload.set_fault(live.kubeconfig, ns, DEPLOY, "errors", "1.0", flag=FLAG)
    wait_for(lambda: _rolled_out(live, ns, 2), timeout=60, what="the faulty revision rolled out")
    assert set(wait_for(lambda: set(_codes(live, ns).values()) == {500} and _codes(live, ns), 30,
                        "the faulty path failing every request").values()) == {500}

    facts = containment.read_facts(get_kube(settings), target)
    assert facts.flags == {FLAG: "on"} and facts.flag_store == f"ConfigMap {ns}/feature-flags"
    off = next(a for a in containment.options(facts, allow_all_replicas=False) if a.kind is ActionKind.set_flags)
    assert off.patch == {"flags": {FLAG: "off"}} and containment.is_containment(off)
    guard = Guard(settings)

    before = (_restarts(live, ns), _codes(live, ns).keys())
    dry = guard.execute(off, "dry-run", "tester", "run-flags")
    assert dry.decision is Decision.dry_run and live.store.get("configmaps", ns, "feature-flags")["data"][FLAG] == "on"
    done = guard.execute(off, "required", "alice", "run-flags")
    assert done.executed and done.detail == f"ConfigMap {ns}/feature-flags: {FLAG} on -> off", done.detail
    quiet = wait_for(lambda: set(_codes(live, ns).values()) == {200} and _codes(live, ns), 20, "the faulty path quiet")
    assert (_restarts(live, ns), quiet.keys()) == before, "turning a flag off restarts nothing"

    # Another run within the cooldown is refused; the same run may undo its own containment.
    assert guard.execute(off, "auto", "bob", "run-other").decision is Decision.refused
    undo = containment.undo_of(off, facts)
    assert undo is not None and undo.patch == {"flags": {FLAG: "on"}}
    assert guard.execute(undo, "auto", "alice", "run-flags").executed
    wait_for(lambda: set(_codes(live, ns).values()) == {500}, 20, "the faulty path back once the flag is on again")

    refused = {
        "undeclared flag": Action(kind=ActionKind.set_flags, target=target, patch={"flags": {"dark-mode": "off"}}),
        "not on/off": Action(kind=ActionKind.set_flags, target=target, patch={"flags": {FLAG: "maybe"}}),
    }
    for label, action in refused.items():
        assert guard.execute(action, "auto", "alice", "run-flags").decision is Decision.refused, label
    audit = [(r.action.kind.value, r.decision.value) for r in read_audit("run-flags", settings=settings)]
    assert audit == [("set_flags", "dry-run"), ("set_flags", "allowed"), ("set_flags", "allowed"),
                     ("set_flags", "refused"), ("set_flags", "refused")]
    live.store.delete("namespaces", None, ns)


def _endpoint_ips(live: InProcCluster, ns: str) -> set[str]:
    ep = live.store.try_get("endpoints", ns, DEPLOY) or {}
    return {a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []}


def _ips_by_hash(live: InProcCluster, ns: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in _ready_pods(live, ns):
        out.setdefault(p["metadata"]["labels"]["pod-template-hash"], set()).add(p["status"]["podIP"])
    return out


def test_traffic_redirected_to_the_stable_pods_and_restored(live: InProcCluster, settings: Settings) -> None:
    ns = _shop(live, 3)
    target = WorkloadRef(namespace=ns, name=DEPLOY)
    old_hash = live.pods(ns, DEPLOY)[0]["metadata"]["labels"]["pod-template-hash"]
    # A bad revision rolled out one pod at a time (each new pod ready only after 3 s), paused as soon as one new
    # pod serves: old and new revisions both behind the Service, as in a canary.
    live.apps.patch_namespaced_deployment(DEPLOY, ns, {"spec": {
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"spec": {"containers": [{"name": DEPLOY, "env": [{"name": "FAULT_ERROR_RATE", "value": "1.0"}],
                                              "readinessProbe": {"initialDelaySeconds": 3}}]}}}})
    wait_for(lambda: any(h != old_hash for h in _ips_by_hash(live, ns)), 60, "a ready pod of the new revision")
    live.apps.patch_namespaced_deployment(DEPLOY, ns, {"spec": {"paused": True}})
    by_hash = wait_for(lambda: (b := _ips_by_hash(live, ns)) and _endpoint_ips(live, ns) == set().union(*b.values()) and b,
                       20, "endpoints of both revisions")
    assert old_hash in by_hash and len(by_hash) == 2

    facts = containment.read_facts(get_kube(settings), target)
    assert facts.stable_hash == old_hash and facts.services == [DEPLOY] and facts.newer_ready
    redirect = next(a for a in containment.options(facts, allow_all_replicas=False) if a.kind is ActionKind.redirect_traffic)
    guard = Guard(settings)
    new_hash = next(h for h in by_hash if h != old_hash)
    to_new = redirect.model_copy(update={"patch": {"service": DEPLOY, "pod_template_hash": new_hash}})
    assert "newest revision" in guard.execute(to_new, "auto", "alice", "run-redirect").detail
    assert guard.execute(Action(kind=ActionKind.restore_traffic, target=target, patch={"service": DEPLOY}),
                         "auto", "alice", "run-redirect").decision is Decision.refused  # nothing to restore yet

    done = guard.execute(redirect, "required", "alice", "run-redirect")
    assert done.executed, done.detail
    assert f"app={DEPLOY} -> app={DEPLOY},pod-template-hash={old_hash}" in done.detail
    stable_ips = _ips_by_hash(live, ns)[old_hash]
    wait_for(lambda: _endpoint_ips(live, ns) == stable_ips, 20, "endpoints of the stable pods only")
    kubectl_ep = live.kubectl("get", "endpoints", DEPLOY, "-n", ns, "-o", "jsonpath={.subsets[*].addresses[*].ip}").stdout
    assert set(kubectl_ep.split()) == stable_ips
    svc = live.store.get("services", ns, DEPLOY)
    assert svc["metadata"]["annotations"][workloads.SELECTOR_UNDO_ANNOTATION] == '{"app": "checkout"}'

    undo = containment.undo_of(redirect, facts)
    assert undo is not None and undo.kind is ActionKind.restore_traffic
    restored = guard.execute(undo, "auto", "alice", "run-redirect")
    assert restored.executed, restored.detail
    svc = live.store.get("services", ns, DEPLOY)
    assert svc["spec"]["selector"] == {"app": DEPLOY}
    assert workloads.SELECTOR_UNDO_ANNOTATION not in (svc["metadata"].get("annotations") or {})
    wait_for(lambda: _endpoint_ips(live, ns) == set().union(*_ips_by_hash(live, ns).values()), 20, "every pod back")
    audit = [(r.action.kind.value, r.decision.value) for r in read_audit("run-redirect", settings=settings)]
    assert audit == [("redirect_traffic", "refused"), ("restore_traffic", "refused"), ("redirect_traffic", "allowed"),
                     ("restore_traffic", "allowed")]
    live.store.delete("namespaces", None, ns)


def test_scale_to_zero_then_back_gradually_each_step_validated(live: InProcCluster, settings: Settings) -> None:
    ns = _shop(live, 3)
    target = WorkloadRef(namespace=ns, name=DEPLOY)
    facts = containment.read_facts(get_kube(settings), target)
    assert not [a for a in containment.options(facts, allow_all_replicas=False) if a.kind is ActionKind.scale]
    zero = next(a for a in containment.options(facts, allow_all_replicas=True) if a.kind is ActionKind.scale)
    assert zero.replicas == 0 and zero.allow_all_replicas
    guard = Guard(settings)
    assert "allow_all_replicas" in guard.execute(zero.model_copy(update={"allow_all_replicas": False}), "auto", "alice",
                                                 "run-zero").detail
    assert guard.execute(zero, "required", "alice", "run-zero").executed
    wait_for(lambda: not live.pods(ns, DEPLOY), 30, "no pod left")

    seen: list[int] = []

    def validate(replicas: int) -> tuple[bool, str]:
        seen.append(replicas)
        health = workloads.wait_until_healthy(ns, DEPLOY, replicas, stable_seconds=1, timeout_seconds=60, settings=settings)
        pods = len(live.pods(ns, DEPLOY))
        return health.healthy and pods == replicas, f"{health.detail}; {pods} pods"

    undo = containment.undo_of(zero, facts)
    assert undo is not None and undo.replicas == 3
    report = containment.scale_back_gradually(guard, target, 0, undo.replicas, validate, step=1, approval_mode="required",
                                              actor="alice", flow_run_id="run-zero")
    assert report.complete and report.reached == 3 and seen == [1, 2, 3], report
    assert [r.action.replicas for r in report.results] == [1, 2, 3] and all(r.executed for r in report.results)
    assert len(_ready_pods(live, ns)) == 3

    # A step that does not validate stops the scale-back where it is (here: pods that never become ready).
    assert guard.execute(zero, "required", "alice", "run-zero").executed
    wait_for(lambda: not live.pods(ns, DEPLOY), 30, "no pod left")
    live.apps.patch_namespaced_deployment(DEPLOY, ns, {"spec": {"template": {"spec": {"containers": [
        {"name": DEPLOY, "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}}}]}}}})

    def never_ready(replicas: int) -> tuple[bool, str]:
        health = workloads.wait_until_healthy(ns, DEPLOY, replicas, stable_seconds=1, timeout_seconds=5, settings=settings)
        return health.healthy, health.detail

    stopped = containment.scale_back_gradually(guard, target, 0, 3, never_ready, step=1, approval_mode="required",
                                               actor="alice", flow_run_id="run-zero")
    assert not stopped.complete and stopped.reached == 0 and "step 1/3 did not validate" in stopped.stopped
    assert live.store.get("deployments", ns, DEPLOY)["spec"]["replicas"] == 1
    dry = containment.scale_back_gradually(guard, target, 1, 3, never_ready, step=2, approval_mode="dry-run",
                                           actor="alice", flow_run_id="run-zero")
    assert dry.stopped.startswith("dry-run") and live.store.get("deployments", ns, DEPLOY)["spec"]["replicas"] == 1
    live.store.delete("namespaces", None, ns)
