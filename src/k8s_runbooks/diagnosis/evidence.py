"""Typed evidence: what a cluster shows about an incident, whatever it was read from.

Three sources fill these models the same way: the live cluster (official client + Prometheus), a snapshot file
(this model as versioned JSON) and a recorded Cloud-OpsBench case (kubectl text, manifests, logs). The engine
only ever sees `Evidence`. Values that may be secrets (env values, log lines) are redacted by the sources
before they land here; Secrets and ConfigMaps are recorded by name and key names only.

Quantities stay strings as Kubernetes writes them ("200m", "64Mi"); `quantity.py` compares them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SNAPSHOT_VERSION = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectRef(_M):
    kind: str = Field(description="Kubernetes kind: Pod, Deployment, ReplicaSet, Node, Service, ...")
    name: str
    namespace: str | None = Field(None, description="None for cluster-scoped objects (Node, PersistentVolume)")

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


class Event(_M):
    object: ObjectRef = Field(description="the involved object")
    type: str = Field("Normal", description="Normal | Warning")
    reason: str
    message: str
    count: int = 1
    age_seconds: float | None = Field(None, description="time since the event was last seen, at collection")
    source: str | None = Field(None, description="reporting component: kubelet, default-scheduler, ...")


# ------------------------------------------------------------------------------------ pod spec
class Probe(_M):
    kind: Literal["http", "tcp", "grpc", "exec"]
    port: int | str | None = None
    path: str | None = None
    scheme: str | None = None
    command: list[str] = Field(default_factory=list)
    initial_delay_seconds: int = 0
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3


class KeyRef(_M):
    name: str = Field(description="Secret or ConfigMap name")
    key: str | None = None
    optional: bool = False


class EnvVar(_M):
    name: str
    value: str | None = Field(None, description="literal value (redacted when it looks like a secret)")
    secret_ref: KeyRef | None = None
    config_map_ref: KeyRef | None = None


class EnvFrom(_M):
    kind: Literal["Secret", "ConfigMap"]
    name: str
    optional: bool = False


class ContainerPort(_M):
    port: int
    name: str | None = None
    protocol: str = "TCP"


class VolumeMount(_M):
    name: str
    path: str
    read_only: bool = False


class Container(_M):
    name: str
    image: str = ""
    ports: list[ContainerPort] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    env_from: list[EnvFrom] = Field(default_factory=list)
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup: Probe | None = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    run_as_user: int | None = None


class Volume(_M):
    name: str
    kind: str = Field(description="secret | configMap | persistentVolumeClaim | emptyDir | hostPath | projected | other")
    ref: str | None = Field(None, description="the Secret / ConfigMap / claim name it points at")
    optional: bool = False


class Toleration(_M):
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None


class Requirement(_M):
    key: str
    operator: str = "In"
    operands: list[str] = Field(default_factory=list, description="the requirement's `values` (renamed: see NamedKeys.key_names)")


class AffinityTerm(_M):
    """A required pod (anti-)affinity term: pods matching `match_labels` within `topology_key`."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[Requirement] = Field(default_factory=list)
    topology_key: str = "kubernetes.io/hostname"


class PodSpec(_M):
    labels: dict[str, str] = Field(default_factory=dict)
    containers: list[Container] = Field(default_factory=list)
    init_containers: list[Container] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    node_affinity: list[list[Requirement]] = Field(
        default_factory=list, description="required node affinity: terms OR-ed, requirements in a term AND-ed")
    pod_anti_affinity: list[AffinityTerm] = Field(default_factory=list, description="required anti-affinity terms")
    tolerations: list[Toleration] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    fs_group: int | None = None
    run_as_user: int | None = None
    dns_policy: str | None = Field(None, description="ClusterFirst (default), Default, None, ClusterFirstWithHostNet")
    dns_nameservers: list[str] = Field(default_factory=list, description="dnsConfig.nameservers")


# ------------------------------------------------------------------------------------ workloads and pods
class Workload(_M):
    kind: str = "Deployment"
    name: str
    namespace: str
    labels: dict[str, str] = Field(default_factory=dict)
    selector: dict[str, str] = Field(default_factory=dict)
    replicas: int | None = Field(None, description="desired (spec.replicas)")
    ready_replicas: int | None = None
    updated_replicas: int | None = None
    available_replicas: int | None = None
    template: PodSpec | None = None
    revision: int | None = None
    conditions: dict[str, str] = Field(default_factory=dict, description="type -> 'Status[/Reason]'")
    age_seconds: float | None = None


class ReplicaSet(_M):
    name: str
    namespace: str
    owner: str | None = Field(None, description="owning Deployment name")
    revision: int | None = None
    desired: int | None = None
    ready: int | None = None
    age_seconds: float | None = None
    images: list[str] = Field(default_factory=list)
    template: PodSpec | None = Field(None, description="the revision's pod template (what it changed, against the previous one)")


class ContainerState(_M):
    state: Literal["running", "waiting", "terminated", "unknown"] = "unknown"
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None


class ContainerStatus(_M):
    name: str
    ready: bool = False
    restart_count: int = 0
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: ContainerState | None = None
    init: bool = False


class Pod(_M):
    name: str
    namespace: str
    labels: dict[str, str] = Field(default_factory=dict)
    phase: str = "Unknown"
    status: str | None = Field(None, description="kubectl's STATUS column (CrashLoopBackOff, Pending, Init:0/1...)")
    node: str | None = None
    ip: str | None = None
    owner: ObjectRef | None = None
    workload: str | None = Field(None, description="the workload (Deployment/StatefulSet) this pod belongs to")
    containers: list[ContainerStatus] = Field(default_factory=list)
    conditions: dict[str, str] = Field(default_factory=dict)
    age_seconds: float | None = None
    last_restart_age_seconds: float | None = Field(None, description="time since the last container restart")
    terminating: bool = False
    spec: PodSpec | None = None


# ------------------------------------------------------------------------------------ cluster
class Taint(_M):
    key: str
    value: str | None = None
    effect: str = "NoSchedule"


class Node(_M):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    unschedulable: bool = False
    ready: str = Field("Unknown", description="Ready condition status: True | False | Unknown")
    conditions: dict[str, str] = Field(default_factory=dict)
    allocatable: dict[str, str] = Field(default_factory=dict)
    allocated_requests: dict[str, str] = Field(default_factory=dict, description="sum of pod requests on the node")


class NodeComponent(_M):
    node: str
    component: str = Field(description="kubelet | containerd | kube-proxy | kube-scheduler | ...")
    active: bool | None = Field(None, description="None when the status could not be read")
    state: str = Field("", description="systemd's Active: line, or the pod phase for static pods")
    log_lines: list[str] = Field(default_factory=list)


class ServicePort(_M):
    name: str | None = None
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


class Service(_M):
    name: str
    namespace: str
    type: str = "ClusterIP"
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str | None = None


class Endpoints(_M):
    name: str
    namespace: str
    ready: list[str] = Field(default_factory=list, description="ready addresses (ip:port)")
    not_ready: list[str] = Field(default_factory=list)


class ResourceQuota(_M):
    name: str
    namespace: str
    hard: dict[str, str] = Field(default_factory=dict)
    used: dict[str, str] = Field(default_factory=dict)


class PersistentVolumeClaim(_M):
    name: str
    namespace: str
    status: str = "Pending"
    volume: str | None = None
    storage_class: str | None = Field(None, description="'' means explicitly none; None means unset (default class)")
    access_modes: list[str] = Field(default_factory=list)
    requested: str | None = None
    selector: dict[str, str] = Field(default_factory=dict)


class PersistentVolume(_M):
    name: str
    capacity: str | None = None
    access_modes: list[str] = Field(default_factory=list)
    status: str = "Available"
    claim: str | None = Field(None, description="namespace/name of the bound claim")
    storage_class: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class StorageClass(_M):
    name: str
    provisioner: str | None = None
    binding_mode: str | None = None
    default: bool = False


class NamedKeys(_M):
    """A Secret or ConfigMap: its name and key names, never values."""

    name: str
    # Not `keys`: dict(model) (Prefect does it to every task input) would call that list.
    key_names: list[str] = Field(default_factory=list, description="its key names, never values")
    coordinates: dict[str, str] = Field(
        default_factory=dict, description="where it points, not secrets: values of *HOST/*PORT/*ADDR/*URL/*DATABASE keys")


# ------------------------------------------------------------------------------------ signals
class LogExcerpt(_M):
    workload: str = Field(description="workload or service the lines belong to")
    pod: str | None = None
    container: str | None = None
    previous: bool = False
    lines: list[str] = Field(default_factory=list)


class Connectivity(_M):
    service: str
    port: int | None = None
    ok: bool
    detail: str = ""


class Anomaly(_M):
    """An alert or anomaly a monitoring system raised (Alertmanager alert, anomaly detector finding)."""

    entity_kind: str = Field("Service", description="Service | Node | Pod | Workload")
    entity: str
    category: str = Field(description="e.g. LATENCY_DEGRADATION, RESOURCE_SATURATION, ERROR_SPIKE, alertname")
    detail: str = ""


class LatencyObservation(_M):
    """A service's request latency as a runbook measured it: now, per pod, and when the newest revision began."""

    service: str
    workload: str | None = None
    quantile: float = 0.95
    threshold_ms: float
    current_ms: float | None = None
    by_pod_ms: dict[str, float] = Field(default_factory=dict)
    outlier_factor: float = Field(2.0, description="a pod this many times slower than the median pod is an outlier")
    newest_revision: int | None = None
    before_newest_revision_ms: float | None = Field(None, description="latency when the newest ReplicaSet was created")


class MetricSeries(_M):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    points: list[tuple[float, float]] = Field(default_factory=list, description="(unix seconds, value)")


class Route(_M):
    """A routing rule of a gateway or ingress: requests for `paths` go to `target`."""

    source: str = Field(description="where the rule lives: configmap/<name> key, ingress/<name>")
    id: str = ""
    paths: list[str] = Field(default_factory=list)
    target: str = Field(description="the host requests are sent to (a Service name when in-cluster)")
    port: int | None = None


class Dependency(_M):
    service: str
    calls: list[str] = Field(default_factory=list)
    called_by: list[str] = Field(default_factory=list)
    databases: list[str] = Field(default_factory=list)


class Evidence(_M):
    version: int = SNAPSHOT_VERSION
    source: str = Field("live", description="live | snapshot | cloud-opsbench")
    namespace: str
    collected_at: datetime | None = None
    workloads: list[Workload] = Field(default_factory=list)
    replicasets: list[ReplicaSet] = Field(default_factory=list)
    pods: list[Pod] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    node_components: list[NodeComponent] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    endpoints: list[Endpoints] = Field(default_factory=list)
    quotas: list[ResourceQuota] = Field(default_factory=list)
    quotas_listed: bool = Field(False, description="the namespace's quotas were listed: a quota missing from `quotas` "
                                                   "does not exist (else: not collected, cannot tell)")
    pvcs: list[PersistentVolumeClaim] = Field(default_factory=list)
    pvs: list[PersistentVolume] = Field(default_factory=list)
    storage_classes: list[StorageClass] = Field(default_factory=list)
    service_accounts: list[str] | None = Field(None, description="None: not collected (cannot tell missing)")
    secrets: list[NamedKeys] | None = None
    config_maps: list[NamedKeys] | None = None
    logs: list[LogExcerpt] = Field(default_factory=list)
    connectivity: list[Connectivity] = Field(default_factory=list)
    anomalies: list[Anomaly] = Field(default_factory=list)
    metrics: list[MetricSeries] = Field(default_factory=list)
    latency: list[LatencyObservation] = Field(default_factory=list)
    dependencies: list[Dependency] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list, description="gateway and ingress routing rules")
    declared_missing: list[ObjectRef] = Field(
        default_factory=list, description="objects the application's manifests declare that the cluster does not have")
    notes: list[str] = Field(default_factory=list, description="what could not be collected, and why")
