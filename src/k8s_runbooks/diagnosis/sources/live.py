"""Evidence from the live cluster: the namespace's objects through the one client seam (`kube.client`: timeouts,
error mapping, read retries), logs of the pods in trouble (redacted), and what Prometheus says (firing alerts,
latency and CPU against a baseline, `live_metrics.py`).

Reads only what the shipped RBAC grants (deployments/k8s/base/rbac.yaml); a read the identity may not make
is recorded in `evidence.notes` and the diagnosis goes on without it. Secrets are never listed: their values
would come with them, and the kubelet's events already name a Secret that is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

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
# Reads in flight at once: the ~15 lists, then the log reads and Prometheus, each a round trip that mostly waits
# on a server. Eight keeps one diagnosis a light client of the API server (kubectl's discovery runs more) and
# within the client's connection pool (10 per host on 2 cores).
MAX_CONCURRENT_READS = 8
Progress = Callable[[str], None]
J = dict[str, Any]
# resource → API path (namespaced ones take {namespace}); every read the shipped Role/ClusterRole grants.
NAMESPACED = {
    "deployments": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "statefulsets": "/apis/apps/v1/namespaces/{namespace}/statefulsets",
    "daemonsets": "/apis/apps/v1/namespaces/{namespace}/daemonsets",
    "replicasets": "/apis/apps/v1/namespaces/{namespace}/replicasets",
    "events": "/api/v1/namespaces/{namespace}/events",
    "services": "/api/v1/namespaces/{namespace}/services",
    "endpoints": "/api/v1/namespaces/{namespace}/endpoints",
    "resourcequotas": "/api/v1/namespaces/{namespace}/resourcequotas",
    "persistentvolumeclaims": "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    "serviceaccounts": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "configmaps": "/api/v1/namespaces/{namespace}/configmaps",
    "ingresses": "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses",
}
CLUSTER = {
    "nodes": "/api/v1/nodes",
    "persistentvolumes": "/api/v1/persistentvolumes",
    "storageclasses": "/apis/storage.k8s.io/v1/storageclasses",
}
WORKLOAD_KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}


def _no_nulls(pairs: list[tuple[str, Any]]) -> J:
    # An explicit null reads as an absent field (as the typed client's objects serialise), so `.get(k, {})` holds.
    return {k: v for k, v in pairs if v is not None}


def _list(kube: Kube, resource: str, path: str, namespace: str | None) -> list[J]:
    """The items of one list call as the API sends them (JSON, camelCase)."""
    body = kube.get_raw(Op("list", resource, namespace), path, {"namespace": namespace} if namespace else None)
    items = json.loads(body, object_pairs_hook=_no_nulls).get("items") or []
    return [i for i in items if isinstance(i, dict)]


def _optional(kube: Kube, resource: str, path: str, namespace: str | None) -> tuple[list[J] | None, str | None]:
    """(items, None), or (None, note) when the identity may not read them or the API has no such kind."""
    try:
        return _list(kube, resource, path, namespace), None
    except Forbidden as exc:
        return None, f"{resource}: not readable by this identity ({exc.message.split(':', 1)[0]})"
    except NotFound:
        return None, f"{resource}: not served by this API server"


def collect(namespace: str, service: str | None = None, *, settings: Settings | None = None, kube: Kube | None = None,
            progress: Progress | None = None, metrics: bool = True) -> ev.Evidence:
    """Everything the engine needs about `namespace` now. Raises only when the namespace itself cannot be read
    (no cluster, no permission to list its pods); partial reads become notes.

    The reads run concurrently (`MAX_CONCURRENT_READS`), each with its own timeout and retries; the evidence
    (and the order of its notes) is the same as one read after another would give."""
    settings = settings or get_settings()
    kube = kube or get_kube(settings)
    say = progress or (lambda _m: None)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    e = ev.Evidence(source="live", namespace=namespace, collected_at=now)
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_READS, thread_name_prefix="evidence") as pool:
        # Pods are the one read we cannot do without: its errors (Forbidden, unreachable) propagate.
        pods_read = pool.submit(_list, kube, "pods", "/api/v1/namespaces/{namespace}/pods", namespace)
        reads = {r: pool.submit(_optional, kube, r, path, namespace) for r, path in NAMESPACED.items()}
        reads |= {r: pool.submit(_optional, kube, r, path, None) for r, path in CLUSTER.items()}
        e.pods = [ko.pod(p, now) for p in pods_read.result()]
        say(f"{namespace}: {len(e.pods)} pods")
        # What needs only the pods starts now, beside the lists still in flight.
        if metrics:
            from k8s_runbooks.diagnosis.sources.live_metrics import metric_anomalies

            prometheus = pool.submit(metric_anomalies, namespace, list(e.pods), settings)
        logs = [(target, pool.submit(_log, namespace, target, settings)) for target in _log_targets(e, service)]
        _add_objects(e, {r: f.result() for r, f in reads.items()}, now)
        say(f"{namespace}: {len(e.workloads)} workloads, {len(e.events)} events, {len(e.services)} services, {len(e.nodes)} nodes")
        _add_logs(e, logs)
        say(f"{namespace}: {len(e.logs)} log excerpts")
        if metrics:
            anomalies, notes = prometheus.result()
            e.anomalies += anomalies
            e.notes += notes
            say(f"{namespace}: Prometheus: {len(anomalies)} anomalies")
    e.dependencies = e.dependencies or _dependencies_from_config(e)
    redact_evidence(e)
    say(f"{namespace}: evidence collected in {time.perf_counter() - started:.2f} s")
    return e


def _add_objects(e: ev.Evidence, read: dict[str, tuple[list[J] | None, str | None]], now: datetime) -> None:
    """The lists into evidence, in a fixed order (notes included), whatever order the reads finished in."""
    e.notes += [note for _items, note in read.values() if note]

    def items(resource: str) -> list[J]:
        return read[resource][0] or []

    for resource, kind in WORKLOAD_KINDS.items():
        for obj in items(resource):
            obj.setdefault("kind", kind)
            w = ko.workload(obj)
            w.age_seconds = ko._age(obj.get("metadata", {}).get("creationTimestamp"), now)
            e.workloads.append(w)
    e.replicasets = [ko.replicaset(x, now) for x in items("replicasets")]
    e.events = [ko.event(x, now) for x in items("events")]
    e.services = [ko.service(x) for x in items("services")]
    e.endpoints = [ko.endpoints(x) for x in items("endpoints")]
    e.quotas = [ko.quota(x) for x in items("resourcequotas")]
    e.pvcs = [ko.pvc(x) for x in items("persistentvolumeclaims")]
    accounts = read["serviceaccounts"][0]
    e.service_accounts = [str(a.get("metadata", {}).get("name", "")) for a in accounts] if accounts is not None else None
    config_maps = read["configmaps"][0]
    if config_maps is not None:
        e.config_maps = [ko.named_keys(c) for c in config_maps]
        for c in config_maps:
            e.routes += config_map_routes(str(c.get("metadata", {}).get("name", "")), c.get("data") or {})
    for ing in items("ingresses"):
        e.routes += ingress_routes(ing)
    e.nodes = [ko.node(x) for x in items("nodes")]
    e.pvs = [ko.pv(x) for x in items("persistentvolumes")]
    e.storage_classes = [ko.storage_class(x) for x in items("storageclasses")]


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


def _log(namespace: str, target: tuple[ev.Pod, ev.ContainerStatus, bool], settings: Settings) -> Any:
    pod, c, previous = target
    try:
        return container_logs(namespace, pod.name, container=c.name, previous=previous, tail_lines=LOG_TAIL_LINES, settings=settings)
    except RunbookError as exc:
        return exc


def _add_logs(e: ev.Evidence, reads: list[tuple[tuple[ev.Pod, ev.ContainerStatus, bool], Future[Any]]]) -> None:
    for (pod, c, previous), read in reads:
        excerpt = read.result()
        if isinstance(excerpt, RunbookError):
            e.notes.append(f"logs of {pod.name}/{c.name}: {excerpt.message}")
        elif excerpt.lines:
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
