"""Cluster faults: each one the change a person's mistake would make, so the symptoms come from the cluster's own
machinery (scheduler, kubelet, admission, endpoints) with its own messages, and `clear` undoes it exactly.

`inject` and `clear` change the cluster and are called ONLY by `guard.Guard.execute` (inject_fault with
`patch={"fault": KIND}`, remove_fault with `patch={"clear_faults": true}`). What a fault changed is recorded in
the `k8s-runbooks.io/fault-undo` annotation of the Deployment (and of the Service for `service-selector`), like
kubectl's last-applied annotation, so `clear` restores the original values rather than guessing them.
"""

from __future__ import annotations

import json
from typing import Any

from k8s_runbooks.errors import InvalidInput, NotFound
from k8s_runbooks.kube.client import Kube, Op
from k8s_runbooks.kube.workloads import _rollout_restart, _scale
from k8s_runbooks.drills import fault_secrets as secrets
from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS  # the names only: a dependency-free module (as drills.model)

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
UNDO_ANNOTATION = "k8s-runbooks.io/fault-undo"
FAULT_LABEL = "k8s-runbooks.io/fault"
TAINT = {"key": "dedicated", "value": "maintenance", "effect": "NoSchedule"}
QUOTA_NAME = "compute-quota"

def _dict(kube: Kube, obj: Any) -> dict[str, Any]:
    return kube.api_client.sanitize_for_serialization(obj)


def _read(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return _dict(kube, kube.call(Op("get", "deployments", ns, name), kube.apps.read_namespaced_deployment, name, ns))


def _undo_of(obj: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads((obj["metadata"].get("annotations") or {}).get(UNDO_ANNOTATION) or "{}")
    except ValueError:
        return {}


def _patch_deployment(kube: Kube, ns: str, name: str, body: dict[str, Any], content_type: str = STRATEGIC) -> None:
    kube.call(Op("patch", "deployments", ns, name), kube.apps.patch_namespaced_deployment, name, ns, body,
              _content_type=content_type)


def _save_undo(kube: Kube, ns: str, name: str, undo: dict[str, Any], *, service: str | None = None) -> None:
    body = {"metadata": {"annotations": {UNDO_ANNOTATION: json.dumps(undo, sort_keys=True) if undo else None}}}
    if service:
        kube.call(Op("patch", "services", ns, service), kube.core.patch_namespaced_service, service, ns, body,
                  _content_type=MERGE)
    else:
        _patch_deployment(kube, ns, name, body, MERGE)


def _main_container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"].get("containers") or []
    if not containers:
        raise InvalidInput(f"deployment {dep['metadata']['name']} has no containers")
    return containers[0]


def _container_patch(c: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": c["name"], **fields}]}}}}


def _wrong_port(c: dict[str, Any]) -> int:
    ports = [int(p["containerPort"]) for p in c.get("ports") or [] if str(p.get("containerPort", "")).isdigit()]
    return (ports[0] if ports else 8080) + 1


def _cpu_millis(value: Any) -> int:
    text = str(value or "0")
    return int(float(text[:-1])) if text.endswith("m") else int(float(text) * 1000)


# ------------------------------------------------------------------------------------------ inject
def inject(kube: Kube, ns: str, name: str, kind: str) -> str:
    """Apply one cluster fault to deployment ns/name; returns what changed (for the audit record)."""
    if kind not in CLUSTER_FAULTS:
        raise InvalidInput(f"unknown cluster fault {kind!r}", hint=f"use one of {', '.join(CLUSTER_FAULTS)}")
    dep = _read(kube, ns, name)
    undo = _undo_of(dep)
    if kind in undo:
        return f"{ns}/{name}: {kind} already injected (clear it first)"
    c = _main_container(dep)
    pod_spec = dep["spec"]["template"]["spec"]
    if kind == "missing-secret":
        undo[kind], what = secrets.delete_used_secret(kube, ns, name, dep, c)
    elif kind == "image-not-found":
        image = c.get("image") or ""
        repo, sep, tag = image.rpartition(":")
        bad = f"{image}x" if sep and "/" not in tag else f"{image}:latestx"
        _patch_deployment(kube, ns, name, _container_patch(c, image=bad))
        undo[kind] = {"container": c["name"], "image": image}
        what = f"image {image} -> {bad}"
    elif kind == "node-selector":
        _patch_deployment(kube, ns, name, {"spec": {"template": {"spec": {"nodeSelector": {"disktype": "ssd"}}}}})
        undo[kind] = {"disktype": (pod_spec.get("nodeSelector") or {}).get("disktype")}
        what = "nodeSelector disktype=ssd"
    elif kind == "taint":
        nodes = _taint_nodes(kube)
        _rollout_restart(kube, ns, name)
        undo[kind] = {"nodes": nodes}
        what = f"tainted {len(nodes)} node(s) {TAINT['key']}={TAINT['value']}:{TAINT['effect']}, restarted {name}"
    elif kind == "quota":
        used = _namespace_cpu_requests(kube, ns)
        body = {"metadata": {"name": QUOTA_NAME, "labels": {FAULT_LABEL: "quota"}},
                "spec": {"hard": {"requests.cpu": f"{used}m"}}}
        kube.call(Op("create", "resourcequotas", ns, QUOTA_NAME), kube.core.create_namespaced_resource_quota, ns, body)
        _rollout_restart(kube, ns, name)
        undo[kind] = {"quota": QUOTA_NAME}
        what = f"resourcequota {QUOTA_NAME} requests.cpu={used}m, restarted {name}"
    elif kind == "liveness-port":
        port = _wrong_port(c)
        probe = {"httpGet": {"path": "/healthz", "port": port}, "initialDelaySeconds": 2, "periodSeconds": 5,
                 "failureThreshold": 3}
        _patch_deployment(kube, ns, name, _container_patch(c, livenessProbe=probe))
        undo[kind] = {"container": c["name"], "probe": c.get("livenessProbe")}
        what = f"livenessProbe httpGet :{port}/healthz"
    elif kind == "readiness-port":
        port = _wrong_port(c)
        probe = json.loads(json.dumps(c.get("readinessProbe") or {"httpGet": {"path": "/healthz"}}))
        for handler in ("httpGet", "tcpSocket"):
            if handler in probe:
                probe[handler]["port"] = port
        if "httpGet" not in probe and "tcpSocket" not in probe:
            probe = {"tcpSocket": {"port": port}}
        _patch_deployment(kube, ns, name, _container_patch(c, readinessProbe=probe))
        undo[kind] = {"container": c["name"], "probe": c.get("readinessProbe")}
        what = f"readinessProbe port {port}"
    elif kind == "service-selector":
        service, what = _break_service(kube, ns, dep)
        undo[kind] = {"service": service}
    else:  # zero-replicas
        replicas = dep["spec"].get("replicas", 1)
        _scale(kube, ns, name, 0)
        undo[kind] = {"replicas": replicas}
        what = f"replicas {replicas} -> 0"
    _save_undo(kube, ns, name, undo)
    return f"{ns}/{name}: {kind} fault: {what}"


def _taint_nodes(kube: Kube) -> list[str]:
    nodes = kube.call(Op("list", "nodes"), kube.core.list_node).items
    tainted = []
    for node in nodes:
        taints = [_dict(kube, t) for t in (node.spec.taints or [])]
        if any(t.get("key") == TAINT["key"] and t.get("value") == TAINT["value"] for t in taints):
            continue
        kube.call(Op("patch", "nodes", None, node.metadata.name), kube.core.patch_node, node.metadata.name,
                  {"spec": {"taints": [*taints, dict(TAINT)]}}, _content_type=MERGE)
        tainted.append(node.metadata.name)
    return tainted


def _namespace_cpu_requests(kube: Kube, ns: str) -> int:
    pods = kube.call(Op("list", "pods", ns), kube.core.list_namespaced_pod, ns).items
    total = 0
    for pod in pods:
        if pod.status and pod.status.phase in ("Succeeded", "Failed"):
            continue
        for c in pod.spec.containers or []:
            res = c.resources
            value = ((res.requests or {}).get("cpu") or (res.limits or {}).get("cpu")) if res else None
            total += _cpu_millis(value)
    return total


def _break_service(kube: Kube, ns: str, dep: dict[str, Any]) -> tuple[str, str]:
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    services = kube.call(Op("list", "services", ns), kube.core.list_namespaced_service, ns).items
    matching = [s for s in services if s.spec.selector and all(labels.get(k) == v for k, v in s.spec.selector.items())]
    matching.sort(key=lambda s: (s.metadata.name != dep["metadata"]["name"], s.metadata.name))
    if not matching:
        raise NotFound(f"no Service in {ns} selects the pods of {dep['metadata']['name']}")
    svc = matching[0]
    selector = dict(svc.spec.selector)
    key = "app" if "app" in selector else sorted(selector)[0]
    broken = {**selector, key: f"{selector[key]}-v2"}
    name = svc.metadata.name
    kube.call(Op("patch", "services", ns, name), kube.core.patch_namespaced_service, name, ns,
              {"metadata": {"annotations": {UNDO_ANNOTATION: json.dumps({"selector": selector})}},
               "spec": {"selector": broken}}, _content_type=MERGE)
    return name, f"service {name} selector {key}={broken[key]}"


# ------------------------------------------------------------------------------------------ clear
def active(kube: Kube, ns: str, name: str) -> list[str]:
    """The cluster faults injected into ns/name (from its undo annotation)."""
    return sorted(_undo_of(_read(kube, ns, name)))


def clear(kube: Kube, ns: str, name: str) -> str:
    """Undo every cluster fault recorded on ns/name; returns what was undone."""
    dep = _read(kube, ns, name)
    undo = _undo_of(dep)
    done = []
    for kind, data in sorted(undo.items()):
        if kind == "missing-secret":
            secrets.restore_secret(kube, ns, name, data)
        elif kind == "image-not-found":
            _patch_deployment(kube, ns, name, _container_patch({"name": data["container"]}, image=data["image"]))
        elif kind == "node-selector":
            _patch_deployment(kube, ns, name, {"spec": {"template": {"spec": {"nodeSelector": {"disktype": data["disktype"]}}}}})
        elif kind == "taint":
            _untaint_nodes(kube, data.get("nodes") or [])
        elif kind == "quota":
            try:
                kube.call(Op("delete", "resourcequotas", ns, data["quota"]), kube.core.delete_namespaced_resource_quota,
                          data["quota"], ns)
            except NotFound:
                pass
        elif kind in ("liveness-port", "readiness-port"):
            field = "livenessProbe" if kind == "liveness-port" else "readinessProbe"
            _patch_deployment(kube, ns, name, _container_patch({"name": data["container"]}, **{field: data["probe"]}))
        elif kind == "service-selector":
            _restore_service(kube, ns, data["service"])
        elif kind == "zero-replicas":
            _scale(kube, ns, name, int(data["replicas"]))
        done.append(kind)
    if undo:
        _save_undo(kube, ns, name, {})
    return f"{ns}/{name}: cleared {', '.join(done)}" if done else f"{ns}/{name}: no cluster fault to clear"


def _untaint_nodes(kube: Kube, names: list[str]) -> None:
    for node_name in names:
        try:
            node = kube.call(Op("get", "nodes", None, node_name), kube.core.read_node, node_name)
        except NotFound:
            continue
        taints = [_dict(kube, t) for t in (node.spec.taints or [])]
        kept = [t for t in taints if not (t.get("key") == TAINT["key"] and t.get("value") == TAINT["value"])]
        if kept != taints:
            kube.call(Op("patch", "nodes", None, node_name), kube.core.patch_node, node_name,
                      {"spec": {"taints": kept or None}}, _content_type=MERGE)


def _restore_service(kube: Kube, ns: str, name: str) -> None:
    svc = _dict(kube, kube.call(Op("get", "services", ns, name), kube.core.read_namespaced_service, name, ns))
    original = _undo_of(svc).get("selector")
    if original is None:
        return
    current = svc["spec"].get("selector") or {}
    selector = {**{k: None for k in current if k not in original}, **original}
    kube.call(Op("patch", "services", ns, name), kube.core.patch_namespaced_service, name, ns,
              {"metadata": {"annotations": {UNDO_ANNOTATION: None}}, "spec": {"selector": selector}},
              _content_type=MERGE)
