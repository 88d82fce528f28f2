"""Metrics of the sandbox in Prometheus text format, with the names and labels kube-prometheus uses:
kube-state-metrics (from the store), cAdvisor (measured from the pod processes) and http_sd targets.
"""

from __future__ import annotations

import json
from datetime import datetime
from collections.abc import Iterable
from typing import Any

from k8s_runbooks.sandbox.controllers import Informer, is_ready
from k8s_runbooks.sandbox import quantity
from k8s_runbooks.sandbox.kubelet import Kubelet, parse_cpu, parse_memory
from k8s_runbooks.sandbox.store import Obj

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
WAITING_REASONS = ("ContainerCreating", "CrashLoopBackOff", "CreateContainerConfigError", "ErrImagePull",
                   "ImagePullBackOff", "CreateContainerError", "InvalidImageName")
TERMINATED_REASONS = ("OOMKilled", "Completed", "Error", "ContainerCannotRun", "DeadlineExceeded", "Evicted")


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, type_: str, help_: str, labels: dict[str, Any], value: float) -> None:
        fam = self.families.setdefault(name, (type_, help_, []))
        lbl = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        fam[2].append(f"{name}{{{lbl}}} {_fmt(value)}")

    def declare(self, name: str, type_: str, help_: str) -> None:
        self.families.setdefault(name, (type_, help_, []))

    def render(self) -> str:
        out = []
        for name, (type_, help_, lines) in self.families.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {type_}")
            out.extend(lines)
        return "\n".join(out) + "\n"


def _owner(obj: Obj) -> tuple[str, str]:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("kind", "<none>"), ref.get("name", "<none>")
    return "<none>", "<none>"


# ------------------------------------------------------------------------------------------ ksm
def render_kube_state_metrics(store: Informer) -> str:
    w = _Writer()
    g = "gauge"
    pods = store.list("pods")
    for p in pods:
        meta, spec, st = p["metadata"], p.get("spec") or {}, p.get("status") or {}
        base = {"namespace": meta["namespace"], "pod": meta["name"], "uid": meta["uid"]}
        kind, oname = _owner(p)
        w.add("kube_pod_info", g, "Information about pod.", {
            **base, "host_ip": st.get("hostIP", ""), "pod_ip": st.get("podIP", ""), "node": spec.get("nodeName", ""),
            "created_by_kind": kind, "created_by_name": oname, "priority_class": "", "host_network": "false"}, 1)
        w.add("kube_pod_owner", g, "Information about the Pod's owner.",
              {**base, "owner_kind": kind, "owner_name": oname, "owner_is_controller": "true" if kind != "<none>" else "<none>"}, 1)
        phase = st.get("phase", "Pending")
        for ph in PHASES:
            w.add("kube_pod_status_phase", g, "The pods current phase.", {**base, "phase": ph}, ph == phase)
        ready = is_ready(p)
        for cond, val in (("true", ready), ("false", not ready), ("unknown", False)):
            w.add("kube_pod_status_ready", g, "Describes whether the pod is ready to serve requests.",
                  {**base, "condition": cond}, val)
        _pod_scheduling(w, p, base)
        statuses = {c["name"]: c for c in st.get("containerStatuses") or []}
        for c in spec.get("containers") or []:
            cb = {"namespace": meta["namespace"], "pod": meta["name"], "uid": meta["uid"], "container": c["name"]}
            cs = statuses.get(c["name"], {})
            w.add("kube_pod_container_info", g, "Information about a container in a pod.",
                  {**cb, "image": c.get("image", ""), "image_spec": c.get("image", ""), "image_id": cs.get("imageID", ""),
                   "container_id": cs.get("containerID", "")}, 1)
            w.add("kube_pod_container_status_restarts_total", "counter",
                  "The number of container restarts per container.", cb, int(cs.get("restartCount") or 0))
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            w.add("kube_pod_container_status_running", g, "Describes whether the container is currently in running state.",
                  cb, "running" in state)
            w.add("kube_pod_container_status_ready", g, "Describes whether the containers readiness check succeeded.",
                  cb, bool(cs.get("ready")))
            w.add("kube_pod_container_status_waiting", g, "Describes whether the container is currently in waiting state.",
                  cb, "waiting" in state)
            w.add("kube_pod_container_status_terminated", g, "Describes whether the container is currently in terminated state.",
                  cb, "terminated" in state)
            w.declare("kube_pod_container_status_waiting_reason", g,
                      "Describes the reason the container is currently in waiting state.")
            if "waiting" in state:
                w.add("kube_pod_container_status_waiting_reason", g,
                      "Describes the reason the container is currently in waiting state.",
                      {**cb, "reason": state["waiting"].get("reason", "")}, 1)
            w.declare("kube_pod_container_status_last_terminated_reason", g,
                      "Describes the last reason the container was in terminated state.")
            w.declare("kube_pod_container_status_last_terminated_exitcode", g,
                      "Describes the exit code for the last container in terminated state.")
            if "terminated" in last:
                w.add("kube_pod_container_status_last_terminated_reason", g,
                      "Describes the last reason the container was in terminated state.",
                      {**cb, "reason": last["terminated"].get("reason", "")}, 1)
                w.add("kube_pod_container_status_last_terminated_exitcode", g,
                      "Describes the exit code for the last container in terminated state.",
                      cb, int(last["terminated"].get("exitCode") or 0))
            res = c.get("resources") or {}
            for metric, key, help_ in (("kube_pod_container_resource_limits", "limits",
                                        "The number of requested limit resource by a container."),
                                       ("kube_pod_container_resource_requests", "requests",
                                        "The number of requested request resource by a container.")):
                w.declare(metric, g, help_)
                values = res.get(key) or {}
                if "cpu" in values and parse_cpu(values["cpu"]) is not None:
                    w.add(metric, g, help_, {**cb, "node": spec.get("nodeName", ""), "resource": "cpu", "unit": "core"},
                          parse_cpu(values["cpu"]))
                if "memory" in values and parse_memory(values["memory"]) is not None:
                    w.add(metric, g, help_, {**cb, "node": spec.get("nodeName", ""), "resource": "memory", "unit": "byte"},
                          parse_memory(values["memory"]))
    for d in store.list("deployments"):
        meta, spec, st = d["metadata"], d.get("spec") or {}, d.get("status") or {}
        b = {"namespace": meta["namespace"], "deployment": meta["name"]}
        desired = spec.get("replicas") if spec.get("replicas") is not None else 1
        for name, help_, value in (
            ("kube_deployment_spec_replicas", "Number of desired pods for a deployment.", desired),
            ("kube_deployment_status_replicas", "The number of replicas per deployment.", st.get("replicas", 0)),
            ("kube_deployment_status_replicas_ready", "The number of ready replicas per deployment.", st.get("readyReplicas", 0)),
            ("kube_deployment_status_replicas_available", "The number of available replicas per deployment.",
             st.get("availableReplicas", 0)),
            ("kube_deployment_status_replicas_unavailable", "The number of unavailable replicas per deployment.",
             st.get("unavailableReplicas", 0)),
            ("kube_deployment_status_replicas_updated", "The number of updated replicas per deployment.",
             st.get("updatedReplicas", 0)),
            ("kube_deployment_metadata_generation", "Sequence number representing a specific generation of the desired state.",
             meta.get("generation", 1)),
            ("kube_deployment_status_observed_generation", "The generation observed by the deployment controller.",
             st.get("observedGeneration", 0)),
        ):
            w.add(name, g, help_, b, value)
        for c in st.get("conditions") or []:
            for cv in ("true", "false", "unknown"):
                w.add("kube_deployment_status_condition", g, "The current status conditions of a deployment.",
                      {**b, "condition": c["type"], "status": cv}, c.get("status", "").lower() == cv)
    _endpoints(w, store)
    _quotas(w, store)
    for r in store.list("replicasets"):
        meta, spec, st = r["metadata"], r.get("spec") or {}, r.get("status") or {}
        b = {"namespace": meta["namespace"], "replicaset": meta["name"]}
        kind, oname = _owner(r)
        w.add("kube_replicaset_owner", g, "Information about the ReplicaSet's owner.",
              {**b, "owner_kind": kind, "owner_name": oname, "owner_is_controller": "true" if kind != "<none>" else "<none>"}, 1)
        w.add("kube_replicaset_spec_replicas", g, "Number of desired pods for a ReplicaSet.", b, spec.get("replicas", 1))
        w.add("kube_replicaset_status_replicas", g, "The number of replicas per ReplicaSet.", b, st.get("replicas", 0))
        w.add("kube_replicaset_status_ready_replicas", g, "The number of ready replicas per ReplicaSet.", b,
              st.get("readyReplicas", 0))
    return w.render()


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pod_scheduling(w: _Writer, pod: Obj, base: dict[str, Any]) -> None:
    """PodScheduled as kube-state-metrics exports it (`kube_pod_status_scheduled`, `kube_pod_status_unschedulable`
    only while the scheduler says Unschedulable) and the deletion timestamp of a terminating pod."""
    g = "gauge"
    conds = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    sched = conds.get("PodScheduled")
    w.declare("kube_pod_status_unschedulable", g, "Describes the unschedulable status for the pod.")
    if sched is not None:
        status = str(sched.get("status", "Unknown")).lower()
        for cv in ("true", "false", "unknown"):
            w.add("kube_pod_status_scheduled", g, "Describes the status of the scheduling process for the pod.",
                  {**base, "condition": cv}, status == cv)
        if status == "false" and sched.get("reason") == "Unschedulable":
            w.add("kube_pod_status_unschedulable", g, "Describes the unschedulable status for the pod.", base, 1)
    w.declare("kube_pod_deletion_timestamp", g, "Unix deletion timestamp")
    deleted = _timestamp(pod["metadata"].get("deletionTimestamp"))
    if deleted is not None:
        w.add("kube_pod_deletion_timestamp", g, "Unix deletion timestamp", base, deleted)


def _endpoints(w: _Writer, store: Informer) -> None:
    """Endpoints as kube-state-metrics exports them: `kube_endpoint_info` for every object, one
    `kube_endpoint_address` per address with `ready`, and the older address counts (ksm < 2.14)."""
    g = "gauge"
    for name, help_ in (("kube_endpoint_info", "Information about endpoint."),
                        ("kube_endpoint_address", "Information about Endpoint addresses"),
                        ("kube_endpoint_address_available", "Number of addresses available in endpoint."),
                        ("kube_endpoint_address_not_ready", "Number of addresses not ready in endpoint")):
        w.declare(name, g, help_)
    for ep in store.list("endpoints"):
        b = {"namespace": ep["metadata"]["namespace"], "endpoint": ep["metadata"]["name"]}
        w.add("kube_endpoint_info", g, "Information about endpoint.", b, 1)
        available = not_ready = 0
        for subset in ep.get("subsets") or []:
            ports = max(len(subset.get("ports") or []), 1)
            for key, ready in (("addresses", "true"), ("notReadyAddresses", "false")):
                for addr in subset.get(key) or []:
                    w.add("kube_endpoint_address", g, "Information about Endpoint addresses",
                          {**b, "ip": addr.get("ip", ""), "ready": ready}, 1)
            available += len(subset.get("addresses") or []) * ports
            not_ready += len(subset.get("notReadyAddresses") or []) * ports
        w.add("kube_endpoint_address_available", g, "Number of addresses available in endpoint.", b, available)
        w.add("kube_endpoint_address_not_ready", g, "Number of addresses not ready in endpoint", b, not_ready)


def _quotas(w: _Writer, store: Informer) -> None:
    """`kube_resourcequota{resource, type="hard"|"used"}` in base units (cores, bytes, counts)."""
    help_ = "Information about resource quota."
    w.declare("kube_resourcequota", "gauge", help_)
    for q in store.list("resourcequotas"):
        b = {"namespace": q["metadata"]["namespace"], "resourcequota": q["metadata"]["name"]}
        st = q.get("status") or {}
        for type_, values in (("hard", (q.get("spec") or {}).get("hard") or {}), ("used", st.get("used") or {})):
            for resource, value in sorted(values.items()):
                try:
                    number = float(quantity.parse(value))
                except quantity.QuantityError:
                    continue
                w.add("kube_resourcequota", "gauge", help_, {**b, "resource": resource, "type": type_}, number)


# ------------------------------------------------------------------------------------------ cadvisor
def render_cadvisor(kubelet: Kubelet) -> str:
    w = _Writer()
    for s in kubelet.container_stats():
        labels = {"container": s["container"], "id": s["id"], "image": s["image"],
                  "name": f"sandbox_{s['container']}_{s['pod']}_{s['namespace']}", "namespace": s["namespace"],
                  "pod": s["pod"]}
        w.add("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.",
              {**labels, "cpu": "total"}, round(s["cpu_seconds"], 3))
        w.add("container_memory_working_set_bytes", "gauge", "Current working set in bytes.", labels, s["rss"])
        w.add("container_memory_rss", "gauge", "Size of RSS in bytes.", labels, s["rss"])
        w.add("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container.", labels, s["memory_limit"])
        if s["cpu_quota"] is not None:
            w.add("container_spec_cpu_quota", "gauge", "CPU quota of the container.", labels, s["cpu_quota"])
            w.add("container_spec_cpu_period", "gauge", "CPU period of the container.", labels, 100000)
            w.add("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.",
                  labels, s["periods"])
            w.add("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.",
                  labels, s["throttled"])
    return w.render()


# ------------------------------------------------------------------------------------------ http_sd
def pod_sd_targets(store: Informer) -> list[dict[str, Any]]:
    """Prometheus http_sd target groups for scrape-annotated running pods (kube-prometheus labels)."""
    groups = []
    for p in store.list("pods"):
        meta, st = p["metadata"], p.get("status") or {}
        ann = meta.get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or st.get("phase") != "Running" or not st.get("podIP"):
            continue
        if meta.get("deletionTimestamp"):
            continue
        containers = (p.get("spec") or {}).get("containers") or []
        port = ann.get("prometheus.io/port") or next(
            (str(cp["containerPort"]) for c in containers for cp in c.get("ports") or []), None)
        if not port:
            continue
        container = next((c["name"] for c in containers
                          if any(str(cp.get("containerPort")) == port for cp in c.get("ports") or [])),
                         containers[0]["name"] if containers else "")
        labels = {"job": "kubernetes-pods", "namespace": meta["namespace"], "pod": meta["name"],
                  "container": container, "node": (p.get("spec") or {}).get("nodeName", ""),
                  "__metrics_path__": ann.get("prometheus.io/path") or "/metrics"}
        app = (meta.get("labels") or {}).get("app") or (meta.get("labels") or {}).get("app.kubernetes.io/name")
        if app:
            labels["app"] = app
        groups.append({"targets": [f"{st['podIP']}:{port}"], "labels": labels})
    return groups


def raw_routes(store: Informer, kubelet: Kubelet) -> Iterable[tuple[str, Any]]:
    def ksm(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, TEXT_CONTENT_TYPE, render_kube_state_metrics(store).encode()

    def cadvisor(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, TEXT_CONTENT_TYPE, render_cadvisor(kubelet).encode()

    def sd(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(pod_sd_targets(store)).encode()

    return [("/metrics/kube-state-metrics", ksm), ("/metrics/cadvisor", cadvisor), ("/sd/pods", sd)]


__all__ = ["render_kube_state_metrics", "render_cadvisor", "pod_sd_targets", "raw_routes"]
