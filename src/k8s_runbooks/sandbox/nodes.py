"""The sandbox's nodes: what each one looks like (labels, capacity, conditions), their registration, and the
node lifecycle controller's jobs (the `node.kubernetes.io/unschedulable` taint follows `kubectl cordon`;
pods that do not tolerate a NoExecute taint are evicted; heartbeats).

Every node is virtual: one kubelet runs the pods of all of them as local processes. What makes them
different is what the scheduler sees (labels, taints, allocatable), and that is what faults play with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.store import Obj, Store, WatchEvent, now_iso

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.37.0-sandbox"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
HEARTBEAT_SECONDS = 40.0
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class NodeSpec:
    """One virtual node. Defaults are generous: the demo, the tests and the 5,000-pod fan-out bench share them."""

    name: str
    ip: str
    zone: str
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "2500"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()


DEFAULT_NODES = tuple(NodeSpec(f"sandbox-node-{i}", f"127.0.0.{10 + i}", f"sandbox-{'abc'[i - 1]}") for i in (1, 2, 3))


def _os_image() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _conditions(since: str, now: str) -> list[Obj]:
    def cond(type_: str, status: str, reason: str, message: str) -> Obj:
        return {"type": type_, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": since,
                "reason": reason, "message": message}
    return [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]


def node_status(spec: NodeSpec, since: str | None = None) -> Obj:
    now = now_iso()
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, "ephemeral-storage": "100Gi",
                 "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    ident = hashlib.sha256(spec.name.encode()).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "capacity": dict(resources), "allocatable": dict(resources),
        "conditions": _conditions(since or now, now),
        "addresses": [{"type": "InternalIP", "address": spec.ip}, {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": ident[:32], "systemUUID": f"{ident[:8]}-{ident[8:12]}-{ident[12:16]}-{ident[16:20]}-{ident[20:32]}",
                     "bootID": ident[32:64], "kernelVersion": os.uname().release, "osImage": _os_image(),
                     "containerRuntimeVersion": "sandbox://1.0.0", "kubeletVersion": KUBELET_VERSION,
                     "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": arch},
    }


def node_object(spec: NodeSpec) -> Obj:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    labels = {"beta.kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
              HOSTNAME_LABEL: spec.name, "kubernetes.io/os": "linux",
              "node.kubernetes.io/instance-type": f"sandbox-standard-{spec.cpu}",
              "topology.kubernetes.io/region": "sandbox", ZONE_LABEL: spec.zone, **spec.labels}
    node: Obj = {"metadata": {"name": spec.name, "labels": labels,
                              "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                              "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                 "spec": {}, "status": node_status(spec)}
    if spec.taints:
        node["spec"]["taints"] = [dict(t) for t in spec.taints]
    return node


def register_nodes(store: Store, specs: Iterable[NodeSpec] = DEFAULT_NODES) -> list[str]:
    """Create the nodes that do not exist yet (a restarted kubelet re-registers, it does not duplicate)."""
    names = []
    for spec in specs:
        names.append(spec.name)
        if store.try_get("nodes", None, spec.name) is None:
            try:
                store.create("nodes", node_object(spec))
            except ApiError as exc:
                if exc.reason != "AlreadyExists":
                    raise
    return names


def node_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def node_ip(node: Obj | None) -> str:
    for a in ((node or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return str(a.get("address"))
    return "127.0.0.1"


# ------------------------------------------------------------------------------------------ taints
def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    """k8s.io/api/core/v1 Toleration.ToleratesTaint."""
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _parse_time(value: str | None) -> float:
    if not value:
        return time.time()
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return time.time()


class NodeController:
    """The node lifecycle controller's part the sandbox needs, driven by the controllers' loop."""

    def __init__(self, store: Store, informer: Any, recorder: Any) -> None:
        self.store = store
        self.cache = informer
        self.recorder = recorder
        self._last_heartbeat = time.monotonic()

    def keys_for(self, ev: WatchEvent) -> list[tuple[str, str, str]]:
        if ev.resource == "nodes" and ev.type != "DELETED":
            return [("node", "", ev.object["metadata"]["name"])]
        return []

    def all_keys(self) -> list[tuple[str, str, str]]:
        keys = [("node", "", n["metadata"]["name"]) for n in self.cache.list("nodes")
                if (n.get("spec") or {}).get("taints") or (n.get("spec") or {}).get("unschedulable")]
        if time.monotonic() - self._last_heartbeat >= HEARTBEAT_SECONDS:
            keys.append(("node-heartbeat", "", ""))
        return keys

    def handle(self, kind: str, _ns: str, name: str) -> bool:
        if kind == "node":
            self.sync_node(name)
        elif kind == "node-heartbeat":
            self.heartbeat()
        else:
            return False
        return True

    def sync_node(self, name: str) -> None:
        node = self.store.try_get("nodes", None, name)
        if node is None:
            return
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        has = any(t.get("key") == UNSCHEDULABLE_TAINT for t in taints)
        if bool(spec.get("unschedulable")) != has:
            if spec.get("unschedulable"):
                taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": now_iso()})
            else:
                taints = [t for t in taints if t.get("key") != UNSCHEDULABLE_TAINT]

            def fn(o: Obj, t: list[Obj] = taints) -> None:
                if t:
                    o.setdefault("spec", {})["taints"] = t
                else:
                    o.setdefault("spec", {}).pop("taints", None)
            self.store.mutate("nodes", None, name, fn)
        self._evict(name, [t for t in taints if t.get("effect") == "NoExecute"])

    def _evict(self, node: str, taints: list[Obj]) -> None:
        """The taint-eviction controller: pods that do not tolerate a NoExecute taint are deleted
        (after their tolerationSeconds, when they tolerate it for a while)."""
        if not taints:
            return
        now = time.time()
        for pod in self.cache.list("pods"):
            if (pod.get("spec") or {}).get("nodeName") != node or pod["metadata"].get("deletionTimestamp"):
                continue
            tolerations = (pod.get("spec") or {}).get("tolerations") or []
            for taint in taints:
                matching = [t for t in tolerations if tolerates([t], taint)]
                if matching and all(t.get("tolerationSeconds") is None for t in matching):
                    continue
                if matching:
                    seconds = min(int(t["tolerationSeconds"]) for t in matching if t.get("tolerationSeconds") is not None)
                    if now < _parse_time(taint.get("timeAdded")) + seconds:
                        continue
                ns, pname = pod["metadata"]["namespace"], pod["metadata"]["name"]
                self.recorder.record(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {ns}/{pname}",
                                     component="taint-eviction-controller")
                try:
                    self.store.delete("pods", ns, pname)
                except ApiError:
                    pass
                break

    def heartbeat(self) -> None:
        """Kubelets post node status regularly; conditions show when they last did."""
        self._last_heartbeat = time.monotonic()
        now = now_iso()
        for node in self.cache.list("nodes"):
            def fn(o: Obj) -> None:
                for c in (o.get("status") or {}).get("conditions") or []:
                    c["lastHeartbeatTime"] = now
            try:
                self.store.mutate("nodes", None, node["metadata"]["name"], fn, subresource="status")
            except ApiError:
                pass
