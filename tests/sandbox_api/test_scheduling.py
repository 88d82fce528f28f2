"""Nodes and the scheduler: kube-scheduler's filters and its FitError wording, the pod's PodScheduled condition,
the FailedScheduling event, and what kubectl shows (get nodes, cordon, describe, -o wide)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from k8s_runbooks.sandbox.controllers import EventRecorder, Informer
from k8s_runbooks.sandbox.nodes import NodeSpec, register_nodes
from k8s_runbooks.sandbox.scheduler import Scheduler
from k8s_runbooks.sandbox.store import Store
from tests.helpers.wait import wait_for

NS = "sched"
TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.fixture
def sched() -> Iterator[tuple[Store, Scheduler]]:
    """A store with three nodes (one with 1 CPU, two tainted) and the scheduler, no kubelet."""
    store = Store()
    store.create("namespaces", {"metadata": {"name": NS}})
    register_nodes(store, [NodeSpec("n1", "127.0.0.21", "z1", cpu="1", labels={"disktype": "hdd"}),
                           NodeSpec("n2", "127.0.0.22", "z2", taints=(TAINT,)),
                           NodeSpec("n3", "127.0.0.23", "z3", taints=(TAINT,), labels={"disktype": "ssd"})])
    informer = Informer(store)
    informer.start()
    yield store, Scheduler(store, informer, EventRecorder(store))
    store.close()


def _pod(store: Store, name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "sandbox/pause:1", **spec.pop("container", {})}], **spec}}
    return store.create("pods", body, namespace=NS)


def _schedule(store: Store, scheduler: Scheduler, name: str) -> dict[str, Any]:
    scheduler.begin_batch()
    scheduler.schedule(NS, name)
    return store.get("pods", NS, name)


def _failed_scheduling(store: Store, name: str) -> list[str]:
    return [e["message"] for e in store.list("events", NS)[0]
            if e["involvedObject"]["name"] == name and e["reason"] == "FailedScheduling"
            and e["source"]["component"] == "default-scheduler" and e["type"] == "Warning"]


def test_unschedulable_pod_gets_the_fit_error_condition_and_event(sched) -> None:
    store, scheduler = sched
    store.mutate("nodes", None, "n1", lambda n: n["spec"].__setitem__("unschedulable", True))
    _pod(store, "web", nodeSelector={"disktype": "nvme"})
    pod = _schedule(store, scheduler, "web")
    expected = ("0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) had untolerated taint "
                "{dedicated: gpu}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"
    cond = pod["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == ("PodScheduled", "False", "Unschedulable",
                                                                               expected)
    assert _failed_scheduling(store, "web") == [expected]
    # a pod that tolerates node.kubernetes.io/unschedulable may still go to the cordoned node
    _pod(store, "agent", nodeSelector={"disktype": "hdd"}, tolerations=[
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}])
    assert _schedule(store, scheduler, "agent")["spec"]["nodeName"] == "n1"


def test_node_selector_and_affinity_mismatch(sched) -> None:
    store, scheduler = sched
    tolerate = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    _pod(store, "sel", nodeSelector={"disktype": "nvme"}, tolerations=tolerate)
    assert _failed_scheduling(store, "sel") == [] and not _schedule(store, scheduler, "sel")["spec"].get("nodeName")
    assert _failed_scheduling(store, "sel") == [
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling."]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disktype", "operator": "In", "values": ["ssd"]}]}]}}}
    _pod(store, "aff", affinity=affinity, tolerations=tolerate)
    assert _schedule(store, scheduler, "aff")["spec"]["nodeName"] == "n3"
    events = [e for e in store.list("events", NS)[0] if e["involvedObject"]["name"] == "aff"]
    assert [(e["reason"], e["message"]) for e in events] == [("Scheduled", f"Successfully assigned {NS}/aff to n3")]


def test_insufficient_cpu_mixed_with_taints(sched) -> None:
    store, scheduler = sched
    _pod(store, "big", container={"resources": {"requests": {"cpu": "2", "memory": "64Mi"}}})
    _schedule(store, scheduler, "big")
    assert _failed_scheduling(store, "big") == [
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. preemption: "
        "0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for "
        "scheduling."]
    # requests count against allocatable: 600m fits n1 once, not twice
    for name in ("a", "b"):
        _pod(store, name, labels={"app": "ab"}, container={"resources": {"requests": {"cpu": "600m"}}})
    assert _schedule(store, scheduler, "a")["spec"]["nodeName"] == "n1"
    assert not _schedule(store, scheduler, "b")["spec"].get("nodeName")
    assert "1 Insufficient cpu" in _failed_scheduling(store, "b")[0]


def test_pod_anti_affinity_on_hostname(sched) -> None:
    store, scheduler = sched
    tolerate = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    nodes = []
    for i in range(4):
        _pod(store, f"db-{i}", labels={"app": "db"}, affinity=anti, tolerations=tolerate)
        nodes.append(_schedule(store, scheduler, f"db-{i}")["spec"].get("nodeName"))
    assert sorted(nodes[:3]) == ["n1", "n2", "n3"] and nodes[3] is None
    assert _failed_scheduling(store, "db-3") == [
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are "
        "available: 3 No preemption victims found for incoming pod."]


def test_unbound_or_missing_claim_blocks_every_node(sched) -> None:
    store, scheduler = sched
    store.create("persistentvolumeclaims", {"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}},
        namespace=NS)
    _pod(store, "db", volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    _pod(store, "lost", volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "gone"}}])
    _schedule(store, scheduler, "db")
    _schedule(store, scheduler, "lost")
    assert _failed_scheduling(store, "db") == [
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling."]
    assert _failed_scheduling(store, "lost")[0].startswith(
        '0/3 nodes are available: persistentvolumeclaim "gone" not found. preemption:')


def test_kubectl_cordon_taint_and_wide_output(live, live_ns) -> None:
    out = live.kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[:3] for line in out[1:]] == [[f"sandbox-node-{i}", "Ready", "<none>"] for i in (1, 2, 3)]
    live.kubectl("cordon", "sandbox-node-1")
    try:
        assert "Ready,SchedulingDisabled" in live.kubectl("get", "node", "sandbox-node-1").stdout
        described = wait_for(lambda: (d := live.kubectl("describe", "node", "sandbox-node-1").stdout)
                             and "node.kubernetes.io/unschedulable:NoSchedule" in d and d, what="cordon taint")
        assert "Unschedulable:      true" in described and "Allocatable:" in described
        live.kubectl("taint", "nodes", "sandbox-node-2", "dedicated=gpu:NoSchedule")
        live.store.create("pods", {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
            "nodeSelector": {"disktype": "ssd"}, "containers": [{"name": "app", "image": "sandbox/pause:1"}]}},
            namespace=live_ns)
        message = ("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had "
                   "untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable. preemption: 0/3 nodes are "
                   "available: 3 Preemption is not helpful for scheduling.")
        wait_for(lambda: message in live.kubectl("describe", "pod", "web", "-n", live_ns).stdout,
                 what="FailedScheduling in kubectl describe pod")
        pending = live.kubectl("get", "pods", "-n", live_ns, "-o", "wide").stdout.splitlines()[1].split()
        assert pending[2] == "Pending" and pending[6] == "<none>"  # STATUS, NODE
        live.kubectl("label", "node", "sandbox-node-3", "disktype=ssd")
        row = wait_for(lambda: (r := live.kubectl("get", "pod", "web", "-n", live_ns, "-o", "wide").stdout
                                .splitlines()[1].split()) and r[6] == "sandbox-node-3" and r, what="pod bound")
        assert row[5].startswith(live.runtime.kubelet.ips.prefix)  # IP
    finally:
        live.kubectl("uncordon", "sandbox-node-1")
        live.kubectl("taint", "nodes", "sandbox-node-2", "dedicated-", check=False)
        live.kubectl("label", "node", "sandbox-node-3", "disktype-", check=False)
    assert wait_for(lambda: "unschedulable" not in str(live.store.get("nodes", None, "sandbox-node-1")["spec"]),
                    what="uncordon removes the taint")
