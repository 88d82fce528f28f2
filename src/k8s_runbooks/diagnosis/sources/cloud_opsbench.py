"""Recorded Cloud-OpsBench incidents into `Evidence`.

A case folder holds `metadata.json` (namespace, query; and the answer key, which this module never reads:
only `namespace` and `query` are taken), `tool_cache.json` (what kubectl and the other diagnostic tools printed
when the incident was recorded, keyed by `Tool:{json args}`) and `raw_data/` (logs.json, alert.json,
metrics.csv). Everything is parsed from the text a real cluster printed; nothing is keyed on case ids, folder
or service names. A damaged case raises `CaseError` with a one-line reason; the batch runner reports it and
goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.sources import k8s_objects, kubectl_objects as ko
from k8s_runbooks.diagnosis.sources.case_files import MAX_FILE_BYTES, CaseError, add_raw_data, read_json
from k8s_runbooks.diagnosis.sources.cloud_opsbench_signals import (
    add_alerts,
    add_connectivity,
    add_dependencies,
    add_logs,
    add_node_component,
)
from k8s_runbooks.diagnosis.sources.fast_json import loads
from k8s_runbooks.diagnosis.sources.kubectl_text import parse_age, parse_describe, parse_selector
from k8s_runbooks.diagnosis.sources.redaction import redact_evidence
from k8s_runbooks.diagnosis.sources.routes import config_map_routes, ingress_routes

__all__ = ["MAX_FILE_BYTES", "Case", "CaseError", "build_evidence", "find_cases", "load_case"]

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Case:
    path: Path
    namespace: str
    symptom: str
    evidence: ev.Evidence


def find_cases(root: Path) -> list[Path]:
    """Case folders under `root` (a folder holding metadata.json and tool_cache.json, or one of them: a damaged
    case), sorted naturally."""
    # A folder with only one of the two files is a damaged case: listed, so that load_case reports it.
    found = {p.parent for name in ("metadata.json", "tool_cache.json") for p in root.rglob(name) if p.is_file()}
    return sorted(found, key=lambda p: [int(x) if x.isdigit() else x for x in p.relative_to(root).parts])


def load_case(path: Path) -> Case:
    """Read one case folder. Raises CaseError (one line) for a case that cannot be diagnosed."""
    meta = read_json(path / "metadata.json", "metadata.json")
    if not isinstance(meta, dict):
        raise CaseError("metadata.json is not an object")
    namespace, symptom = meta.get("namespace"), meta.get("query")  # the answer key is never read
    if not isinstance(namespace, str) or not namespace:
        raise CaseError("metadata.json has no namespace")
    cache = read_json(path / "tool_cache.json", "tool_cache.json")
    if not isinstance(cache, dict):
        raise CaseError("tool_cache.json is not an object")
    evidence = build_evidence(cache, namespace)
    add_raw_data(evidence, path / "raw_data")
    redact_evidence(evidence)
    return Case(path=path, namespace=namespace, symptom=symptom if isinstance(symptom, str) else "", evidence=evidence)


def _calls(cache: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    out = []
    for key, value in cache.items():
        tool, sep, args = key.partition(":")
        if not sep:
            continue
        try:
            parsed = loads(args) if args else {}
        except ValueError:
            continue
        if isinstance(parsed, dict):
            out.append((tool, parsed, value))
    return out


def build_evidence(cache: dict[str, Any], namespace: str) -> ev.Evidence:
    evidence = ev.Evidence(source="cloud-opsbench", namespace=namespace)
    stamp = cache.get("collection_timestamp")
    if isinstance(stamp, str):
        try:
            evidence.collected_at = datetime.fromisoformat(stamp)
        except ValueError:
            evidence.notes.append(f"collection_timestamp unreadable: {stamp[:40]}")
    calls = _calls(cache)
    lists = {}
    for tool, args, value in calls:
        if tool == "GetResources" and isinstance(value, str) and not args.get("name") and not args.get("label_selector"):
            kind = str(args.get("resource_type", ""))
            flavour = "wide" if args.get("output_wide") else ("labels" if args.get("show_labels") else "plain")
            lists[(kind, flavour)] = value
    declared: list[dict[str, Any]] = []
    for tool, args, value in calls:
        if tool == "GetAppYAML" and isinstance(value, str):
            declared += _add_manifests(evidence, value)
    _add_lists(evidence, lists)
    _add_coordinates(evidence, k8s_objects.coordinates_by_name(declared))
    _reconcile_declared(evidence, lists)
    described: set[tuple[str, str]] = set()
    for tool, args, value in calls:
        if tool == "DescribeResource":
            key = (_singular(str(args.get("resource_type", ""))), str(args.get("name", "")))
            if key in described or not _worth_describing(evidence, *key):
                continue
            described.add(key)
        try:
            _add_call(evidence, tool, args, value)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # one odd tool output never sinks the case
            evidence.notes.append(f"{tool} {args.get('resource_type') or args.get('service_name') or ''}: unreadable ({exc})")
    _finish(evidence)
    return evidence


def _add_manifests(evidence: ev.Evidence, text: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if isinstance(d, dict)]
    except yaml.YAMLError:
        evidence.notes.append("an application manifest is not valid YAML")
        return []
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and isinstance(doc.get("data"), dict):
            evidence.routes += config_map_routes(str((doc.get("metadata") or {}).get("name", "")), doc["data"])
        elif doc.get("kind") == "Ingress":
            evidence.routes += ingress_routes(doc)
        if doc.get("kind") in k8s_objects.MANIFEST_KINDS and isinstance(doc.get("metadata"), dict):
            doc["metadata"].setdefault("namespace", evidence.namespace)
            k8s_objects.add_manifest(evidence, doc)
    return docs


def _add_coordinates(evidence: ev.Evidence, coords: dict[tuple[str, str], dict[str, str]]) -> None:
    """Connection settings the manifests give, onto the Secrets/ConfigMaps that exist in the cluster."""
    for kind, items in (("Secret", evidence.secrets), ("ConfigMap", evidence.config_maps)):
        for item in items or []:
            item.coordinates = coords.get((kind, item.name), item.coordinates)


def _add_lists(evidence: ev.Evidence, lists: dict[tuple[str, str], str]) -> None:
    ns = evidence.namespace

    def rows(kind: str, *flavours: str) -> list[dict[str, str]]:
        key = "OBJECT" if kind == "events" else "NAME"
        for f in flavours:
            text = lists.get((kind, f))
            if text:  # a row without a name is not an object (text that is not a kubectl table)
                return [r for r in ko.table(text) if r.get(key)]
        return []

    labels = {r.get("NAME"): parse_selector(r.get("LABELS", "")) for r in rows("pods", "labels")}
    for r in rows("pods", "wide", "plain"):
        name = r.get("NAME", "")
        if not name:
            continue
        ready = r.get("READY", "0/0")
        restarts, _, ago = r.get("RESTARTS", "0").partition(" ")
        evidence.pods.append(ev.Pod(
            name=name, namespace=ns, labels=labels.get(name, {}), status=r.get("STATUS"),
            phase="Running" if r.get("STATUS") == "Running" else ("Pending" if r.get("STATUS") == "Pending" else "Unknown"),
            node=None if r.get("NODE") in (None, "", "<none>") else r.get("NODE"),
            ip=None if r.get("IP") in (None, "", "<none>") else r.get("IP"), age_seconds=parse_age(r.get("AGE")),
            last_restart_age_seconds=parse_age(ago.strip("() ").removesuffix(" ago")) if ago else None,
            workload=ko.workload_of_pod(name), terminating=r.get("STATUS") == "Terminating",
            containers=[ev.ContainerStatus(name="?", ready=ready.split("/")[0] == ready.split("/")[-1],
                                           restart_count=int(restarts) if restarts.isdigit() else 0)],
        ))
    node_labels = {r.get("NAME"): parse_selector(r.get("LABELS", "")) for r in rows("nodes", "labels")}
    for r in rows("nodes", "wide", "plain"):
        status = r.get("STATUS", "")
        evidence.nodes.append(ev.Node(name=r.get("NAME", ""), labels=node_labels.get(r.get("NAME"), {}),
                                      unschedulable="SchedulingDisabled" in status,
                                      ready="True" if status.split(",")[0] == "Ready" else ("False" if "NotReady" in status else "Unknown")))
    _workload_rows(evidence, rows("deployments", "wide", "plain"), "Deployment")
    _workload_rows(evidence, rows("statefulsets", "wide", "plain"), "StatefulSet")
    for r in rows("replicasets", "wide", "plain"):
        evidence.replicasets.append(ev.ReplicaSet(
            name=r.get("NAME", ""), namespace=ns, owner=ko.workload_of_pod(r.get("NAME", "") + "-xxxxx"),
            desired=_int(r.get("DESIRED")), ready=_int(r.get("READY")), age_seconds=parse_age(r.get("AGE")),
            images=[i for i in r.get("IMAGES", "").split(",") if i]))
    for r in rows("endpoints", "wide", "plain"):
        addrs = [a for a in r.get("ENDPOINTS", "").replace(" + ", ",").split(",") if ":" in a]
        evidence.endpoints.append(ev.Endpoints(name=r.get("NAME", ""), namespace=ns, ready=addrs))
    for r in rows("persistentvolumeclaims", "wide", "plain"):
        name = r.get("NAME", "")
        known = next((c for c in evidence.pvcs if c.name == name), None)
        claim = known or ev.PersistentVolumeClaim(name=name, namespace=ns)
        claim.status, claim.volume = r.get("STATUS") or claim.status, r.get("VOLUME") or claim.volume
        if known is None:
            claim.storage_class = r.get("STORAGECLASS") or None
            claim.access_modes = ko.access_modes(r.get("ACCESS MODES", ""))
            evidence.pvcs.append(claim)
    for r in rows("persistentvolumes", "wide", "plain"):
        name = r.get("NAME", "")
        evidence.pvs = [p for p in evidence.pvs if p.name != name]
        evidence.pvs.append(ev.PersistentVolume(
            name=name, capacity=r.get("CAPACITY") or None, access_modes=ko.access_modes(r.get("ACCESS MODES", "")),
            status=r.get("STATUS") or "Available", claim=r.get("CLAIM") or None, storage_class=r.get("STORAGECLASS") or None,
            labels=parse_selector(r.get("LABELS", "")) if r.get("LABELS") else {}))
    for r in rows("storageclasses", "wide", "plain"):
        name = r.get("NAME", "")
        evidence.storage_classes = [s for s in evidence.storage_classes if s.name != name.replace(" (default)", "")]
        evidence.storage_classes.append(ev.StorageClass(name=name.replace(" (default)", ""), provisioner=r.get("PROVISIONER"),
                                                        binding_mode=r.get("VOLUMEBINDINGMODE"), default="(default)" in name))
    if ("resourcequota", "plain") in lists:
        evidence.quotas = ko.quota_rows(lists[("resourcequota", "plain")], ns) or evidence.quotas
    if ("serviceaccounts", "plain") in lists:
        evidence.service_accounts = [r.get("NAME", "") for r in rows("serviceaccounts", "plain") if r.get("NAME")]
    if ("secrets", "plain") in lists:
        evidence.secrets = [ev.NamedKeys(name=r.get("NAME", "")) for r in rows("secrets", "plain") if r.get("NAME")]
    if ("configmaps", "plain") in lists:
        evidence.config_maps = [ev.NamedKeys(name=r.get("NAME", "")) for r in rows("configmaps", "plain") if r.get("NAME")]
    for r in rows("services", "wide", "plain"):
        svc = next((s for s in evidence.services if s.name == r.get("NAME")), None)
        if svc is None and r.get("NAME"):
            svc = ev.Service(name=r["NAME"], namespace=ns, type=r.get("TYPE") or "ClusterIP")
            evidence.services.append(svc)
        if svc is not None and r.get("SELECTOR") is not None:
            svc.selector = parse_selector(r.get("SELECTOR", ""))
    for r in rows("events", "plain") or ko.headerless_events(lists.get(("events", "plain"), "")):
        obj = r.get("OBJECT", "")
        kind, _, name = obj.partition("/")
        evidence.events.append(ev.Event(
            object=ev.ObjectRef(kind=_KINDS.get(kind, kind.capitalize()), name=name, namespace=ns), type=r.get("TYPE") or "Normal",
            reason=r.get("REASON", ""), message=r.get("MESSAGE", ""), age_seconds=parse_age(r.get("LAST SEEN")), source="events"))


def _reconcile_declared(evidence: ev.Evidence, lists: dict[tuple[str, str], str]) -> None:
    """Objects only the manifests know of (a `kubectl apply` the API refused) leave the live lists for
    `declared_missing`; judged only where the cluster's own list was recorded."""

    def live(kind: str) -> set[str] | None:
        text = next((lists[(kind, f)] for f in ("plain", "wide") if (kind, f) in lists), None)
        return None if text is None else {r.get("NAME", "") for r in ko.table(text)}

    services, claims = live("services"), live("persistentvolumeclaims")
    deployments, statefulsets = live("deployments"), live("statefulsets")
    if services is not None:
        gone = [s for s in evidence.services if s.name not in services]
        evidence.services = [s for s in evidence.services if s.name in services]
        evidence.declared_missing += [ev.ObjectRef(kind="Service", name=s.name, namespace=evidence.namespace) for s in gone]
    if claims is not None:
        gone = [c for c in evidence.pvcs if c.name not in claims]
        evidence.pvcs = [c for c in evidence.pvcs if c.name in claims]
        evidence.declared_missing += [ev.ObjectRef(kind="PersistentVolumeClaim", name=c.name, namespace=evidence.namespace) for c in gone]
    if deployments is not None:
        known = deployments | (statefulsets or set())
        for w in evidence.workloads:
            if w.name not in known and w.kind in ("Deployment", "StatefulSet"):
                evidence.declared_missing.append(ev.ObjectRef(kind=w.kind, name=w.name, namespace=evidence.namespace))
        evidence.workloads = [w for w in evidence.workloads if w.name in known or w.kind not in ("Deployment", "StatefulSet")]


_KINDS = {"pod": "Pod", "replicaset": "ReplicaSet", "deployment": "Deployment", "node": "Node", "service": "Service",
          "persistentvolumeclaim": "PersistentVolumeClaim", "statefulset": "StatefulSet", "endpoints": "Endpoints",
          "job": "Job", "daemonset": "DaemonSet"}


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _workload_rows(evidence: ev.Evidence, rows: list[dict[str, str]], kind: str) -> None:
    for r in rows:
        name = r.get("NAME", "")
        ready, _, desired = r.get("READY", "").partition("/")
        wl = next((w for w in evidence.workloads if w.name == name), None)
        if wl is None:
            wl = ev.Workload(kind=kind, name=name, namespace=evidence.namespace)
            evidence.workloads.append(wl)
        wl.ready_replicas = _int(ready)
        wl.replicas = _int(desired) if desired else wl.replicas
        wl.updated_replicas = _int(r.get("UP-TO-DATE"))
        wl.available_replicas = _int(r.get("AVAILABLE"))
        wl.age_seconds = parse_age(r.get("AGE"))


def _singular(resource_type: str) -> str:
    return resource_type if resource_type == "endpoints" else resource_type.rstrip("s")


def _worth_describing(evidence: ev.Evidence, kind: str, name: str) -> bool:
    """Describes that can add nothing the lists and manifests did not give are skipped (most of a case's cost):
    healthy controllers (their events are routine), services whose ports are known, endpoints with addresses."""
    if kind == "service":
        return not any(s.name == name and s.ports for s in evidence.services)
    if kind == "endpoints":
        return not any(e.name == name and e.ready for e in evidence.endpoints)
    if kind in ("deployment", "statefulset"):
        wl = next((w for w in evidence.workloads if w.name == name), None)
        return wl is None or wl.replicas is None or (wl.ready_replicas or 0) < wl.replicas
    if kind == "replicaset":
        rs = next((r for r in evidence.replicasets if r.name == name), None)
        return rs is None or rs.desired is None or (rs.ready or 0) < rs.desired
    return kind in ("pod", "node", "persistentvolumeclaim", "persistentvolume")


def _add_call(evidence: ev.Evidence, tool: str, args: dict[str, Any], value: Any) -> None:
    ns = evidence.namespace
    if tool == "DescribeResource" and isinstance(value, str) and value.strip():
        kind = _singular(str(args.get("resource_type", "")))
        if kind == "pod":
            pod, events = ko.describe_pod(value, ns)
            _named(pod)
            _merge_pod(evidence, pod)
            evidence.events.extend(events)
        elif kind == "node":
            node, events = ko.describe_node(value)
            _named(node)
            _merge_node(evidence, node)
            evidence.events.extend(events)
        elif kind == "service":
            svc = _named(ko.describe_service(value, ns))
            known = next((s for s in evidence.services if s.name == svc.name), None)
            if known is None:
                evidence.services.append(svc)
            elif not known.ports:
                known.ports = svc.ports
        elif kind == "endpoints":
            eps = _named(ko.describe_endpoints(value, ns))
            evidence.endpoints = [e for e in evidence.endpoints if e.name != eps.name] + [eps]
        elif kind == "persistentvolumeclaim":
            claim, events = ko.describe_pvc(value, ns)
            _named(claim)
            known = next((c for c in evidence.pvcs if c.name == claim.name), None)
            if known is None:
                evidence.pvcs.append(claim)
            else:
                known.status = claim.status
            evidence.events.extend(events)
        elif kind == "persistentvolume":
            d = parse_describe(value)
            pv = next((p for p in evidence.pvs if p.name == d.val("Name")), None)
            if pv is not None:
                pv.labels = pv.labels or parse_selector(",".join(d.values("Labels")))
        elif kind in ("deployment", "replicaset", "statefulset"):
            evidence.events.extend(ko.describe_events(value, kind.capitalize() if kind != "replicaset" else "ReplicaSet", ns))
    elif tool == "GetClusterConfiguration" and isinstance(value, dict):
        for n in value.get("nodes") if isinstance(value.get("nodes"), list) else []:
            if isinstance(n, dict) and n.get("name"):
                taints = [t for t in n["taints"] if isinstance(t, str)] if isinstance(n.get("taints"), list) else []
                _merge_node(evidence, ev.Node(
                    name=str(n["name"]), labels=_str_map(n.get("labels")), taints=[_taint(t) for t in taints],
                    unschedulable=any(t.startswith("node.kubernetes.io/unschedulable") for t in taints),
                    ready="True" if n.get("status") == "Ready" else "False",
                    conditions=_str_map(n.get("conditions")), allocatable=_str_map(n.get("allocatable_resources"))))
    elif tool == "CheckNodeServiceStatus" and isinstance(value, str):
        add_node_component(evidence, str(args.get("node_name", "")), str(args.get("service_name", "")), value)
    elif tool == "CheckServiceConnectivity" and isinstance(value, str):
        add_connectivity(evidence, str(args.get("service_name", "")), args.get("port"), value)
    elif tool == "GetServiceDependencies" and isinstance(value, str):
        add_dependencies(evidence, str(args.get("service_name", "")), value)
    elif tool == "GetErrorLogs":
        add_logs(evidence, str(args.get("service_name", "")), value)
    elif tool == "GetAlerts" and isinstance(value, dict):
        add_alerts(evidence, value)


def _named(obj: Any) -> Any:
    """A described object must have a name: text without `Name:` is not `kubectl describe` output."""
    if not getattr(obj, "name", None):
        raise ValueError("not kubectl describe output (no Name)")
    return obj


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _taint(text: str) -> ev.Taint:
    head, _, effect = text.rpartition(":")
    key, _, value = head.partition("=")
    return ev.Taint(key=key, value=value or None, effect=effect or "NoSchedule")


def _merge_pod(evidence: ev.Evidence, pod: ev.Pod) -> None:
    known = next((p for p in evidence.pods if p.name == pod.name), None)
    if known is None:
        evidence.pods.append(pod)  # described but not listed: it existed when described
        return
    known.containers = pod.containers or known.containers
    known.conditions, known.spec, known.owner = pod.conditions, pod.spec, pod.owner
    known.labels = known.labels or pod.labels
    known.workload = pod.workload or known.workload
    known.phase = pod.phase if pod.phase != "Unknown" else known.phase
    known.node = known.node or pod.node


def _merge_node(evidence: ev.Evidence, node: ev.Node) -> None:
    known = next((n for n in evidence.nodes if n.name == node.name), None)
    if known is None:
        evidence.nodes.append(node)
        return
    known.labels = known.labels or node.labels
    known.taints = node.taints or known.taints
    known.unschedulable = known.unschedulable or node.unschedulable
    known.conditions = {**known.conditions, **node.conditions}
    known.ready = node.conditions.get("Ready", known.ready) if node.conditions else known.ready
    known.allocatable = node.allocatable or known.allocatable
    known.allocated_requests = node.allocated_requests or known.allocated_requests


def _finish(evidence: ev.Evidence) -> None:
    """Pods take their workload's template where describe could not show it (affinity, full probes)."""
    templates = {w.name: w.template for w in evidence.workloads if w.template}
    for pod in evidence.pods:
        tpl = templates.get(pod.workload or "")
        if tpl is None:
            continue
        if pod.spec is None:
            pod.spec = tpl.model_copy(deep=True)
        else:
            pod.spec.node_affinity = pod.spec.node_affinity or tpl.node_affinity
            pod.spec.pod_anti_affinity = pod.spec.pod_anti_affinity or tpl.pod_anti_affinity
            pod.spec.image_pull_secrets = pod.spec.image_pull_secrets or tpl.image_pull_secrets
            pod.spec.fs_group = pod.spec.fs_group if pod.spec.fs_group is not None else tpl.fs_group
            pod.spec.dns_policy = pod.spec.dns_policy or tpl.dns_policy
            pod.spec.dns_nameservers = pod.spec.dns_nameservers or tpl.dns_nameservers
        if not pod.labels:
            pod.labels = dict(tpl.labels)
