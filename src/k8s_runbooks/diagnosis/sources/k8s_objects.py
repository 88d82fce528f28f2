"""Kubernetes API objects (the JSON shape: a manifest, or `ApiClient().sanitize_for_serialization(obj)` of an
official-client model) into evidence models. The live source and the manifest part of recorded cases share it.

Free text (env values may hold a pasted password) is redacted by the source's one pass over the finished
evidence (`redaction.redact_evidence`), never stored raw.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any

from k8s_runbooks.diagnosis import evidence as ev

J = dict[str, Any]


def _d(x: Any) -> J:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _int(x: Any, default: int | None = None) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return default


def _strs(d: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _d(d).items()}


def probe(p: Any) -> ev.Probe | None:
    p = _d(p)
    if not p:
        return None
    timing = {
        "initial_delay_seconds": _int(p.get("initialDelaySeconds"), 0) or 0,
        "timeout_seconds": _int(p.get("timeoutSeconds"), 1) or 1,
        "period_seconds": _int(p.get("periodSeconds"), 10) or 10,
        "success_threshold": _int(p.get("successThreshold"), 1) or 1,
        "failure_threshold": _int(p.get("failureThreshold"), 3) or 3,
    }
    if "httpGet" in p:
        h = _d(p["httpGet"])
        return ev.Probe(kind="http", port=h.get("port"), path=h.get("path"), scheme=h.get("scheme"), **timing)
    if "tcpSocket" in p:
        return ev.Probe(kind="tcp", port=_d(p["tcpSocket"]).get("port"), **timing)
    if "grpc" in p:
        return ev.Probe(kind="grpc", port=_d(p["grpc"]).get("port"), **timing)
    if "exec" in p:
        return ev.Probe(kind="exec", command=[str(c) for c in _l(_d(p["exec"]).get("command"))], **timing)
    return None


def _env(e: J) -> ev.EnvVar:
    vf = _d(e.get("valueFrom"))
    sk, ck = _d(vf.get("secretKeyRef")), _d(vf.get("configMapKeyRef"))
    value = e.get("value")
    return ev.EnvVar(
        name=str(e.get("name", "")),
        value=str(value) if value is not None else None,
        secret_ref=ev.KeyRef(name=str(sk.get("name", "")), key=sk.get("key"), optional=bool(sk.get("optional"))) if sk else None,
        config_map_ref=ev.KeyRef(name=str(ck.get("name", "")), key=ck.get("key"), optional=bool(ck.get("optional"))) if ck else None,
    )


def container(c: J) -> ev.Container:
    res = _d(c.get("resources"))
    env_from: list[ev.EnvFrom] = []
    for ef in _l(c.get("envFrom")):
        ef = _d(ef)
        if "secretRef" in ef:
            env_from.append(ev.EnvFrom(kind="Secret", name=str(_d(ef["secretRef"]).get("name", "")),
                                       optional=bool(_d(ef["secretRef"]).get("optional"))))
        elif "configMapRef" in ef:
            env_from.append(ev.EnvFrom(kind="ConfigMap", name=str(_d(ef["configMapRef"]).get("name", "")),
                                       optional=bool(_d(ef["configMapRef"]).get("optional"))))
    return ev.Container(
        name=str(c.get("name", "")),
        image=str(c.get("image", "")),
        ports=[ev.ContainerPort(port=_int(_d(p).get("containerPort"), 0) or 0, name=_d(p).get("name"),
                                protocol=str(_d(p).get("protocol") or "TCP")) for p in _l(c.get("ports"))],
        env=[_env(_d(e)) for e in _l(c.get("env"))],
        env_from=env_from,
        requests=_strs(res.get("requests")),
        limits=_strs(res.get("limits")),
        liveness=probe(c.get("livenessProbe")),
        readiness=probe(c.get("readinessProbe")),
        startup=probe(c.get("startupProbe")),
        volume_mounts=[ev.VolumeMount(name=str(_d(m).get("name", "")), path=str(_d(m).get("mountPath", "")),
                                      read_only=bool(_d(m).get("readOnly"))) for m in _l(c.get("volumeMounts"))],
        command=[str(x) for x in _l(c.get("command"))],
        args=[str(x) for x in _l(c.get("args"))],
        run_as_user=_int(_d(c.get("securityContext")).get("runAsUser")),
    )


def _volume(v: J) -> ev.Volume:
    for kind, key in (("secret", "secretName"), ("configMap", "name"), ("persistentVolumeClaim", "claimName")):
        if kind in v:
            src = _d(v[kind])
            return ev.Volume(name=str(v.get("name", "")), kind=kind, ref=src.get(key), optional=bool(src.get("optional")))
    kind = next((k for k in ("emptyDir", "hostPath", "projected", "downwardAPI") if k in v), "other")
    return ev.Volume(name=str(v.get("name", "")), kind=kind)


def _requirements(exprs: Any) -> list[ev.Requirement]:
    return [ev.Requirement(key=str(_d(r).get("key", "")), operator=str(_d(r).get("operator", "In")),
                           values=[str(x) for x in _l(_d(r).get("values"))]) for r in _l(exprs)]


def pod_spec(spec: Any, labels: Any = None) -> ev.PodSpec:
    spec = _d(spec)
    aff = _d(spec.get("affinity"))
    node_terms = _l(_d(_d(aff.get("nodeAffinity")).get("requiredDuringSchedulingIgnoredDuringExecution")).get("nodeSelectorTerms"))
    anti = _l(_d(aff.get("podAntiAffinity")).get("requiredDuringSchedulingIgnoredDuringExecution"))
    sc = _d(spec.get("securityContext"))
    return ev.PodSpec(
        labels=_strs(labels),
        containers=[container(_d(c)) for c in _l(spec.get("containers"))],
        init_containers=[container(_d(c)) for c in _l(spec.get("initContainers"))],
        volumes=[_volume(_d(v)) for v in _l(spec.get("volumes"))],
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount"),
        node_selector=_strs(spec.get("nodeSelector")),
        node_affinity=[_requirements(_d(t).get("matchExpressions")) for t in node_terms],
        pod_anti_affinity=[
            ev.AffinityTerm(match_labels=_strs(_d(_d(t).get("labelSelector")).get("matchLabels")),
                            match_expressions=_requirements(_d(_d(t).get("labelSelector")).get("matchExpressions")),
                            topology_key=str(_d(t).get("topologyKey") or "kubernetes.io/hostname"))
            for t in anti
        ],
        tolerations=[ev.Toleration(key=_d(t).get("key"), operator=str(_d(t).get("operator") or "Equal"),
                                   value=_d(t).get("value"), effect=_d(t).get("effect")) for t in _l(spec.get("tolerations"))],
        image_pull_secrets=[str(_d(s).get("name", "")) for s in _l(spec.get("imagePullSecrets"))],
        fs_group=_int(sc.get("fsGroup")),
        run_as_user=_int(sc.get("runAsUser")),
        dns_policy=spec.get("dnsPolicy"),
        dns_nameservers=[str(x) for x in _l(_d(spec.get("dnsConfig")).get("nameservers"))],
    )


def workload(obj: J) -> ev.Workload:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    tpl = _d(spec.get("template"))
    ann = _d(md.get("annotations"))
    return ev.Workload(
        kind=str(obj.get("kind") or "Deployment"),
        name=str(md.get("name", "")),
        namespace=str(md.get("namespace") or ""),
        labels=_strs(md.get("labels")),
        selector=_strs(_d(spec.get("selector")).get("matchLabels")),
        replicas=_int(spec.get("replicas"), 1) if "replicas" in spec else (1 if obj.get("kind") != "DaemonSet" else None),
        ready_replicas=_int(st.get("readyReplicas"), 0) if st else None,
        updated_replicas=_int(st.get("updatedReplicas"), 0) if st else None,
        available_replicas=_int(st.get("availableReplicas"), 0) if st else None,
        template=pod_spec(tpl.get("spec"), _d(tpl.get("metadata")).get("labels")) if tpl else None,
        revision=_int(ann.get("deployment.kubernetes.io/revision")),
        conditions={str(_d(c).get("type")): "/".join(x for x in (str(_d(c).get("status")), _d(c).get("reason") or "") if x)
                    for c in _l(st.get("conditions"))},
    )


def service(obj: J) -> ev.Service:
    md, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    return ev.Service(
        name=str(md.get("name", "")), namespace=str(md.get("namespace") or ""), type=str(spec.get("type") or "ClusterIP"),
        selector=_strs(spec.get("selector")), cluster_ip=spec.get("clusterIP"),
        ports=[ev.ServicePort(name=_d(p).get("name"), port=_int(_d(p).get("port"), 0) or 0, target_port=_d(p).get("targetPort"),
                              protocol=str(_d(p).get("protocol") or "TCP"), app_protocol=_d(p).get("appProtocol"))
               for p in _l(spec.get("ports"))],
    )


def pvc(obj: J) -> ev.PersistentVolumeClaim:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    return ev.PersistentVolumeClaim(
        name=str(md.get("name", "")), namespace=str(md.get("namespace") or ""),
        status=str(st.get("phase") or "Pending"), volume=spec.get("volumeName") or None,
        storage_class=spec.get("storageClassName") if "storageClassName" in spec else None,
        access_modes=[str(m) for m in _l(spec.get("accessModes"))],
        requested=_d(_d(spec.get("resources")).get("requests")).get("storage"),
        selector=_strs(_d(spec.get("selector")).get("matchLabels")),
    )


def pv(obj: J) -> ev.PersistentVolume:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    ref = _d(spec.get("claimRef"))
    return ev.PersistentVolume(
        name=str(md.get("name", "")), capacity=_d(spec.get("capacity")).get("storage"),
        access_modes=[str(m) for m in _l(spec.get("accessModes"))], status=str(st.get("phase") or "Available"),
        claim=f"{ref.get('namespace')}/{ref.get('name')}" if ref.get("name") else None,
        storage_class=spec.get("storageClassName") or None, labels=_strs(md.get("labels")),
    )


def storage_class(obj: J) -> ev.StorageClass:
    md = _d(obj.get("metadata"))
    ann = _d(md.get("annotations"))
    return ev.StorageClass(name=str(md.get("name", "")), provisioner=obj.get("provisioner"),
                           binding_mode=obj.get("volumeBindingMode"),
                           default=ann.get("storageclass.kubernetes.io/is-default-class") == "true")


def quota(obj: J) -> ev.ResourceQuota:
    md, st = _d(obj.get("metadata")), _d(obj.get("status"))
    return ev.ResourceQuota(name=str(md.get("name", "")), namespace=str(md.get("namespace") or ""),
                            hard=_strs(st.get("hard") or _d(obj.get("spec")).get("hard")), used=_strs(st.get("used")))


def node(obj: J) -> ev.Node:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    conds = {str(_d(c).get("type")): str(_d(c).get("status")) for c in _l(st.get("conditions"))}
    return ev.Node(
        name=str(md.get("name", "")), labels=_strs(md.get("labels")),
        taints=[ev.Taint(key=str(_d(t).get("key", "")), value=_d(t).get("value"), effect=str(_d(t).get("effect") or "NoSchedule"))
                for t in _l(spec.get("taints"))],
        unschedulable=bool(spec.get("unschedulable")), ready=conds.get("Ready", "Unknown"), conditions=conds,
        allocatable=_strs(st.get("allocatable")),
    )


_COORDINATE = re.compile(r"(HOST|HOSTNAME|PORT|ADDR|ADDRESS|URL|URI|DATABASE|DB|SERVER|ENDPOINT)$", re.I)
_NOT_COORDINATE = re.compile(r"PASS|SECRET|TOKEN|KEY|CRED", re.I)


def named_keys(obj: J) -> ev.NamedKeys:
    """Name and key names; values only of keys that say where something is (host, port, URL), never of others."""
    coordinates: dict[str, str] = {}
    for source, encoded in ((_d(obj.get("data")), obj.get("kind") == "Secret"), (_d(obj.get("stringData")), False)):
        for key, value in source.items():
            if not _COORDINATE.search(str(key)) or _NOT_COORDINATE.search(str(key)):
                continue
            text = str(value)
            if encoded:
                try:
                    text = base64.b64decode(text, validate=True).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    continue
            coordinates[str(key)] = text[:300]
    return ev.NamedKeys(name=str(_d(obj.get("metadata")).get("name", "")),
                        keys=sorted(set(_d(obj.get("data"))) | set(_d(obj.get("stringData")))), coordinates=coordinates)


def coordinates_by_name(objs: list[J]) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, name) -> coordinates, for the Secrets and ConfigMaps among manifest objects."""
    out = {}
    for obj in objs:
        if obj.get("kind") in ("Secret", "ConfigMap"):
            nk = named_keys(obj)
            if nk.coordinates:
                out[(str(obj["kind"]), nk.name)] = nk.coordinates
    return out


MANIFEST_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Service", "PersistentVolumeClaim", "PersistentVolume",
                  "StorageClass", "ResourceQuota", "ServiceAccount", "Secret", "ConfigMap", "Node"}


def add_manifest(evidence: ev.Evidence, obj: J) -> None:
    """Add one manifest object to `evidence` (later objects of the same kind/name win)."""
    kind = obj.get("kind")
    name = str(_d(obj.get("metadata")).get("name", ""))

    def put(items: list[Any], item: Any) -> None:
        items[:] = [x for x in items if getattr(x, "name", None) != name] + [item]

    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        put(evidence.workloads, workload(obj))
    elif kind == "Service":
        put(evidence.services, service(obj))
    elif kind == "PersistentVolumeClaim":
        put(evidence.pvcs, pvc(obj))
    elif kind == "PersistentVolume":
        put(evidence.pvs, pv(obj))
    elif kind == "StorageClass":
        put(evidence.storage_classes, storage_class(obj))
    elif kind == "ResourceQuota":
        put(evidence.quotas, quota(obj))
    elif kind == "Node":
        put(evidence.nodes, node(obj))


# ------------------------------------------------------------------------------------ live objects (with status)
def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _age(value: Any, now: datetime) -> float | None:
    ts = _ts(value)
    return max(0.0, (now - ts).total_seconds()) if ts else None


def _state(st: Any) -> ev.ContainerState:
    st = _d(st)
    for key in ("waiting", "terminated", "running"):
        if key in st and st[key] is not None:
            inner = _d(st[key])
            return ev.ContainerState(state=key, reason=inner.get("reason"), message=inner.get("message"),  # type: ignore[arg-type]
                                     exit_code=_int(inner.get("exitCode")))
    return ev.ContainerState()


def _kubectl_status(md: J, st: J, statuses: list[J], init_statuses: list[J]) -> str:
    """What `kubectl get pods` prints in STATUS."""
    if md.get("deletionTimestamp"):
        return "Terminating"
    for i, c in enumerate(init_statuses):
        state = _d(c.get("state"))
        if "terminated" in state and _d(state["terminated"]).get("exitCode") == 0:
            continue
        reason = _d(state.get("waiting")).get("reason") if "waiting" in state else None
        return f"Init:{reason}" if reason and reason != "PodInitializing" else f"Init:{i}/{len(init_statuses)}"
    for c in statuses:
        state = _d(c.get("state"))
        if "waiting" in state and _d(state["waiting"]).get("reason"):
            return str(_d(state["waiting"])["reason"])
        if "terminated" in state and _d(state["terminated"]).get("reason"):
            return str(_d(state["terminated"])["reason"])
    return str(st.get("reason") or st.get("phase") or "Unknown")


def pod(obj: J, now: datetime) -> ev.Pod:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    owner = next((_d(o) for o in _l(md.get("ownerReferences")) if _d(o).get("controller")), None)
    statuses = [_d(c) for c in _l(st.get("containerStatuses"))]
    init_statuses = [_d(c) for c in _l(st.get("initContainerStatuses"))]
    containers = []
    finished: list[float] = []
    for c, init in [(c, False) for c in statuses] + [(c, True) for c in init_statuses]:
        last = _d(c.get("lastState"))
        age = _age(_d(last.get("terminated")).get("finishedAt"), now) if last.get("terminated") else None
        if age is not None:
            finished.append(age)
        containers.append(ev.ContainerStatus(name=str(c.get("name", "")), ready=bool(c.get("ready")), restart_count=_int(c.get("restartCount"), 0) or 0,
                                             state=_state(c.get("state")), last_state=_state(last) if last else None, init=init))
    name = str(md.get("name", ""))
    workload = None
    if owner:
        oname = str(owner.get("name", ""))
        workload = re.sub(r"-[a-z0-9]{6,10}$", "", oname) if owner.get("kind") == "ReplicaSet" else oname
    return ev.Pod(
        name=name, namespace=str(md.get("namespace") or ""), labels=_strs(md.get("labels")), phase=str(st.get("phase") or "Unknown"),
        status=_kubectl_status(md, st, statuses, init_statuses), node=spec.get("nodeName"), ip=st.get("podIP"),
        owner=ev.ObjectRef(kind=str(owner.get("kind")), name=str(owner.get("name")), namespace=md.get("namespace")) if owner else None,
        workload=workload, containers=containers,
        conditions={str(_d(c).get("type")): str(_d(c).get("status")) for c in _l(st.get("conditions"))},
        age_seconds=_age(md.get("creationTimestamp"), now), last_restart_age_seconds=min(finished) if finished else None,
        terminating=bool(md.get("deletionTimestamp")), spec=pod_spec(spec, md.get("labels")),
    )


def replicaset(obj: J, now: datetime) -> ev.ReplicaSet:
    md, spec, st = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    owner = next((_d(o).get("name") for o in _l(md.get("ownerReferences")) if _d(o).get("kind") == "Deployment"), None)
    return ev.ReplicaSet(
        name=str(md.get("name", "")), namespace=str(md.get("namespace") or ""), owner=owner,
        revision=_int(_d(md.get("annotations")).get("deployment.kubernetes.io/revision")),
        desired=_int(spec.get("replicas"), 0), ready=_int(st.get("readyReplicas"), 0), age_seconds=_age(md.get("creationTimestamp"), now),
        images=[str(_d(c).get("image", "")) for c in _l(_d(_d(spec.get("template")).get("spec")).get("containers"))],
        template=pod_spec(_d(spec.get("template")).get("spec"), _d(_d(spec.get("template")).get("metadata")).get("labels"))
        if spec.get("template") else None,
    )


def event(obj: J, now: datetime) -> ev.Event:
    involved = _d(obj.get("involvedObject")) or _d(obj.get("regarding"))
    series = _d(obj.get("series"))
    last = series.get("lastObservedTime") or obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("firstTimestamp")
    source = _d(obj.get("source")).get("component") or obj.get("reportingComponent") or obj.get("reportingController")
    return ev.Event(
        object=ev.ObjectRef(kind=str(involved.get("kind", "")), name=str(involved.get("name", "")), namespace=involved.get("namespace")),
        type=str(obj.get("type") or "Normal"), reason=str(obj.get("reason") or ""), message=str(obj.get("message") or obj.get("note") or ""),
        count=_int(series.get("count") or obj.get("count"), 1) or 1, age_seconds=_age(last, now), source=source,
    )


def endpoints(obj: J) -> ev.Endpoints:
    md = _d(obj.get("metadata"))
    ready: list[str] = []
    not_ready: list[str] = []
    for subset in _l(obj.get("subsets")):
        ports = [_int(_d(p).get("port")) for p in _l(_d(subset).get("ports"))] or [None]
        for key, out in (("addresses", ready), ("notReadyAddresses", not_ready)):
            for a in _l(_d(subset).get(key)):
                out += [f"{_d(a).get('ip')}:{p}" if p else str(_d(a).get("ip")) for p in ports]
    return ev.Endpoints(name=str(md.get("name", "")), namespace=str(md.get("namespace") or ""), ready=ready, not_ready=not_ready)
