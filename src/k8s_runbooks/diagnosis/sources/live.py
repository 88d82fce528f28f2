"""Evidence from the live cluster: the namespace's objects through the one client seam (`kube.client`: timeouts,
error mapping, read retries), logs of the pods in trouble (redacted), and what Prometheus says (firing alerts,
latency and CPU against a baseline, `live_metrics.py`).

Reads only what the shipped RBAC grants (deployments/k8s/base/rbac.yaml); a read the identity may not make
is recorded in `evidence.notes` and the diagnosis goes on without it. Secrets are never listed: their values
would come with them, and the kubelet's events already name a Secret that is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes import client as k8s

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.sources import k8s_objects as ko
from k8s_runbooks.diagnosis.sources.redaction import redact_evidence
from k8s_runbooks.diagnosis.sources.routes import config_map_routes, ingress_routes
from k8s_runbooks.errors import Forbidden, NotFound, RunbookError
from k8s_runbooks.kube.client import Kube, Op, get_kube
from k8s_runbooks.kube.logs import container_logs
from k8s_runbooks.settings import Settings, get_settings

MAX_LOG_PODS = 8  # logs of this many troubled pods (previous + current container); the rest is in events
LOG_TAIL_LINES = 80
Progress = Callable[[str], None]


def _plain(api_client: k8s.ApiClient, obj: Any) -> dict[str, Any]:
    data = api_client.sanitize_for_serialization(obj)
    return data if isinstance(data, dict) else {}


def _items(kube: Kube, op: Op, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    result = kube.call(op, fn, *args, **kwargs)
    return [_plain(kube.api_client, item) for item in (getattr(result, "items", None) or [])]


class _Reader:
    def __init__(self, kube: Kube, evidence: ev.Evidence) -> None:
        self.kube, self.e = kube, evidence

    def list(self, resource: str, fn: Callable[..., Any], *args: Any, namespaced: bool = True) -> list[dict[str, Any]] | None:
        """Items of one list call, or None (noted) when the identity may not read them or the API has no such kind."""
        op = Op("list", resource, self.e.namespace if namespaced else None)
        try:
            return _items(self.kube, op, fn, *args)
        except Forbidden as exc:
            self.e.notes.append(f"{resource}: not readable by this identity ({exc.message.split(':', 1)[0]})")
        except NotFound:
            self.e.notes.append(f"{resource}: not served by this API server")
        return None


def collect(namespace: str, service: str | None = None, *, settings: Settings | None = None, kube: Kube | None = None,
            progress: Progress | None = None, metrics: bool = True) -> ev.Evidence:
    """Everything the engine needs about `namespace` now. Raises only when the namespace itself cannot be read
    (no cluster, no permission to list its pods); partial reads become notes."""
    settings = settings or get_settings()
    kube = kube or get_kube(settings)
    say = progress or (lambda _m: None)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    e = ev.Evidence(source="live", namespace=namespace, collected_at=now)
    r = _Reader(kube, e)
    core, apps = kube.core, kube.apps
    api = kube.api_client
    # Pods are the one read we cannot do without: its errors (Forbidden, unreachable) propagate.
    pods = _items(kube, Op("list", "pods", namespace), core.list_namespaced_pod, namespace)
    e.pods = [ko.pod(p, now) for p in pods]
    say(f"{namespace}: {len(e.pods)} pods")
    for kind, resource, fn in (("Deployment", "deployments", apps.list_namespaced_deployment),
                               ("StatefulSet", "statefulsets", apps.list_namespaced_stateful_set),
                               ("DaemonSet", "daemonsets", apps.list_namespaced_daemon_set)):
        for obj in r.list(resource, fn, namespace) or []:
            obj.setdefault("kind", kind)
            w = ko.workload(obj)
            w.age_seconds = ko._age(obj.get("metadata", {}).get("creationTimestamp"), now)
            e.workloads.append(w)
    e.replicasets = [ko.replicaset(x, now) for x in r.list("replicasets", apps.list_namespaced_replica_set, namespace) or []]
    e.events = [ko.event(x, now) for x in r.list("events", core.list_namespaced_event, namespace) or []]
    e.services = [ko.service(x) for x in r.list("services", core.list_namespaced_service, namespace) or []]
    e.endpoints = [ko.endpoints(x) for x in r.list("endpoints", core.list_namespaced_endpoints, namespace) or []]
    e.quotas = [ko.quota(x) for x in r.list("resourcequotas", core.list_namespaced_resource_quota, namespace) or []]
    e.pvcs = [ko.pvc(x) for x in r.list("persistentvolumeclaims", core.list_namespaced_persistent_volume_claim, namespace) or []]
    accounts = r.list("serviceaccounts", core.list_namespaced_service_account, namespace)
    e.service_accounts = [str(a.get("metadata", {}).get("name", "")) for a in accounts] if accounts is not None else None
    config_maps = r.list("configmaps", core.list_namespaced_config_map, namespace)
    if config_maps is not None:
        e.config_maps = [ko.named_keys(c) for c in config_maps]
        for c in config_maps:
            e.routes += config_map_routes(str(c.get("metadata", {}).get("name", "")), c.get("data") or {})
    for ing in r.list("ingresses", k8s.NetworkingV1Api(api).list_namespaced_ingress, namespace) or []:
        e.routes += ingress_routes(ing)
    e.nodes = [ko.node(x) for x in r.list("nodes", core.list_node, namespaced=False) or []]
    e.pvs = [ko.pv(x) for x in r.list("persistentvolumes", core.list_persistent_volume, namespaced=False) or []]
    e.storage_classes = [ko.storage_class(x) for x in r.list("storageclasses", k8s.StorageV1Api(api).list_storage_class, namespaced=False) or []]
    say(f"{namespace}: {len(e.workloads)} workloads, {len(e.events)} events, {len(e.services)} services, {len(e.nodes)} nodes")
    _collect_logs(e, service, settings)
    if metrics:
        from k8s_runbooks.diagnosis.sources.live_metrics import add_metrics

        add_metrics(e, settings)
    e.dependencies = e.dependencies or _dependencies_from_config(e)
    redact_evidence(e)
    say(f"{namespace}: evidence collected in {time.perf_counter() - started:.2f} s")
    return e


def _log_targets(e: ev.Evidence, service: str | None) -> list[tuple[ev.Pod, ev.ContainerStatus, bool]]:
    """Containers worth reading: crashing or not ready first (previous log when it restarted), the focus
    service's pods, then one pod of every other workload (callers log their dependencies' failures)."""
    first, rest = [], []
    seen_workloads: set[str] = set()
    for pod in sorted(e.pods, key=lambda p: p.age_seconds or 0.0):
        if pod.terminating:
            continue
        for c in pod.containers:
            if c.init:
                continue
            troubled = not c.ready or (pod.last_restart_age_seconds is not None and pod.last_restart_age_seconds < 900)
            if troubled or (service and pod.workload == service):
                if c.restart_count:
                    first.append((pod, c, True))
                first.append((pod, c, False))
            elif pod.workload and pod.workload not in seen_workloads:
                rest.append((pod, c, False))
        if pod.workload:
            seen_workloads.add(pod.workload)
    return first[: MAX_LOG_PODS * 2] + rest[: MAX_LOG_PODS]


def _collect_logs(e: ev.Evidence, service: str | None, settings: Settings) -> None:
    for pod, c, previous in _log_targets(e, service):
        try:
            excerpt = container_logs(e.namespace, pod.name, container=c.name, previous=previous, tail_lines=LOG_TAIL_LINES, settings=settings)
        except RunbookError as exc:
            e.notes.append(f"logs of {pod.name}/{c.name}: {exc.message}")
            continue
        if excerpt.lines:
            e.logs.append(ev.LogExcerpt(workload=pod.workload or pod.name, pod=pod.name, container=c.name,
                                        previous=previous, lines=excerpt.lines))


def _dependencies_from_config(e: ev.Evidence) -> list[ev.Dependency]:
    """Who calls whom, from configuration: a workload whose env names a Service's host depends on it."""
    services = {s.name for s in e.services}
    calls: dict[str, list[str]] = {}
    for w in e.workloads:
        for c in w.template.containers if w.template else []:
            for var in c.env:
                host = (var.value or "").split("://")[-1].split("/")[0].split(":")[0]
                if host in services and host != w.name:
                    calls.setdefault(w.name, []).append(host)
    called_by: dict[str, list[str]] = {}
    for caller, callees in calls.items():
        for callee in callees:
            called_by.setdefault(callee, []).append(caller)
    names = set(calls) | set(called_by)
    return [ev.Dependency(service=n, calls=sorted(set(calls.get(n, []))), called_by=sorted(set(called_by.get(n, [])))) for n in sorted(names)]
