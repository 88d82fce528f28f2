"""What the engine concludes: ranked hypotheses, each naming a cause of our taxonomy, the faulty object, a
confidence, and the exact facts (event, field, log line, alert) it rests on; and the plan that answers each."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k8s_runbooks.diagnosis.evidence import ObjectRef
from k8s_runbooks.models import Action


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layer(str, Enum):
    admission = "admission"
    scheduling = "scheduling"
    startup = "startup"
    runtime = "runtime"
    routing = "routing"
    performance = "performance"
    infrastructure = "infrastructure"


class Cause(str, Enum):
    """Our own cause labels. Each belongs to one layer (`LAYER_OF`)."""

    # admission
    quota_cpu_exceeded = "quota-cpu-exceeded"
    quota_memory_exceeded = "quota-memory-exceeded"
    quota_pods_exceeded = "quota-pods-exceeded"
    quota_services_exceeded = "quota-services-exceeded"
    quota_storage_exceeded = "quota-storage-exceeded"
    service_account_missing = "service-account-missing"
    # scheduling
    node_selector_unsatisfiable = "node-selector-unsatisfiable"
    node_affinity_unsatisfiable = "node-affinity-unsatisfiable"
    anti_affinity_unsatisfiable = "anti-affinity-unsatisfiable"
    taint_not_tolerated = "taint-not-tolerated"
    nodes_cordoned = "nodes-cordoned"
    insufficient_cpu = "insufficient-cpu"
    insufficient_memory = "insufficient-memory"
    volume_claimed_by_other = "volume-claimed-by-other"
    claim_selector_unmatched = "claim-selector-unmatched"
    storage_class_missing = "storage-class-missing"
    claim_capacity_unavailable = "claim-capacity-unavailable"
    claim_access_mode_unavailable = "claim-access-mode-unavailable"
    # startup
    image_not_found = "image-not-found"
    registry_unresolvable = "registry-unresolvable"
    image_pull_unauthorized = "image-pull-unauthorized"
    secret_missing = "secret-missing"
    config_map_missing = "config-map-missing"
    volume_permission_denied = "volume-permission-denied"
    # runtime
    oom_killed = "oom-killed"
    liveness_probe_wrong_port = "liveness-probe-wrong-port"
    liveness_probe_wrong_protocol = "liveness-probe-wrong-protocol"
    liveness_probe_too_aggressive = "liveness-probe-too-aggressive"
    readiness_probe_wrong_port = "readiness-probe-wrong-port"
    readiness_probe_wrong_protocol = "readiness-probe-wrong-protocol"
    sidecar_port_conflict = "sidecar-port-conflict"
    db_auth_failed = "db-auth-failed"
    db_wrong_port = "db-wrong-port"
    db_read_only = "db-read-only"
    db_connections_exhausted = "db-connections-exhausted"
    scaled_to_zero = "scaled-to-zero"
    crash_after_rollout = "crash-after-rollout"
    app_crash = "app-crash"
    # routing
    service_selects_no_pods = "service-selects-no-pods"
    service_target_port_wrong = "service-target-port-wrong"
    service_protocol_wrong = "service-protocol-wrong"
    env_address_wrong = "env-address-wrong"
    gateway_route_wrong = "gateway-route-wrong"
    dns_resolution_failed = "dns-resolution-failed"
    # performance
    cpu_saturated = "cpu-saturated"
    pod_network_delay = "pod-network-delay"
    slow_revision = "slow-revision"
    slow_pods = "slow-pods"
    # infrastructure
    node_not_ready = "node-not-ready"
    kubelet_down = "kubelet-down"
    container_runtime_down = "container-runtime-down"
    kube_proxy_down = "kube-proxy-down"
    scheduler_down = "scheduler-down"
    node_network_delay = "node-network-delay"
    node_packet_loss = "node-packet-loss"


_L = Layer
LAYER_OF: dict[Cause, Layer] = {
    **{c: _L.admission for c in (Cause.quota_cpu_exceeded, Cause.quota_memory_exceeded, Cause.quota_pods_exceeded,
                                 Cause.quota_services_exceeded, Cause.quota_storage_exceeded, Cause.service_account_missing)},
    **{c: _L.scheduling for c in (Cause.node_selector_unsatisfiable, Cause.node_affinity_unsatisfiable,
                                  Cause.anti_affinity_unsatisfiable, Cause.taint_not_tolerated, Cause.nodes_cordoned,
                                  Cause.insufficient_cpu, Cause.insufficient_memory, Cause.volume_claimed_by_other,
                                  Cause.claim_selector_unmatched, Cause.storage_class_missing,
                                  Cause.claim_capacity_unavailable, Cause.claim_access_mode_unavailable)},
    **{c: _L.startup for c in (Cause.image_not_found, Cause.registry_unresolvable, Cause.image_pull_unauthorized,
                               Cause.secret_missing, Cause.config_map_missing, Cause.volume_permission_denied)},
    **{c: _L.runtime for c in (Cause.oom_killed, Cause.liveness_probe_wrong_port, Cause.liveness_probe_wrong_protocol,
                               Cause.liveness_probe_too_aggressive, Cause.readiness_probe_wrong_port,
                               Cause.readiness_probe_wrong_protocol, Cause.sidecar_port_conflict, Cause.db_auth_failed,
                               Cause.db_wrong_port, Cause.db_read_only, Cause.db_connections_exhausted,
                               Cause.scaled_to_zero, Cause.crash_after_rollout, Cause.app_crash)},
    **{c: _L.routing for c in (Cause.service_selects_no_pods, Cause.service_target_port_wrong,
                               Cause.service_protocol_wrong, Cause.env_address_wrong, Cause.gateway_route_wrong,
                               Cause.dns_resolution_failed)},
    **{c: _L.performance for c in (Cause.cpu_saturated, Cause.pod_network_delay, Cause.slow_revision, Cause.slow_pods)},
    **{c: _L.infrastructure for c in (Cause.node_not_ready, Cause.kubelet_down, Cause.container_runtime_down,
                                      Cause.kube_proxy_down, Cause.scheduler_down, Cause.node_network_delay,
                                      Cause.node_packet_loss)},
}


FactSource = Literal["event", "field", "status", "log", "alert", "metric", "connectivity", "component", "absence"]


class Fact(_M):
    """One observation a hypothesis rests on, quoted as the cluster wrote it."""

    source: FactSource
    ref: str = Field(description="where it was read: 'pod/x events', 'deployment/x spec.template.spec.nodeSelector'")
    text: str = Field(description="the exact line or value")

    def __str__(self) -> str:
        return f"[{self.source}] {self.ref}: {self.text}"


class Hypothesis(_M):
    cause: Cause
    object: ObjectRef = Field(description="the faulty object: the workload, node or namespace the incident is about")
    confidence: float = Field(ge=0.0, le=1.0)
    summary: str
    facts: list[Fact] = Field(default_factory=list)
    details: dict[str, str] = Field(
        default_factory=dict, description="what the planner needs: container, missing object, wanted value, ...")

    @property
    def layer(self) -> Layer:
        return LAYER_OF[self.cause]


class Diagnosis(_M):
    namespace: str
    symptom: str = ""
    hypotheses: list[Hypothesis] = Field(default_factory=list, description="ranked, most likely first")
    notes: list[str] = Field(default_factory=list, description="evidence gaps that limited the diagnosis")
    elapsed_ms: float = 0.0

    @property
    def matched(self) -> bool:
        return bool(self.hypotheses)

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None


class Escalation(_M):
    """A change only a person should make, stated exactly."""

    summary: str
    change: str = Field(description="the exact change: a kubectl command, a patch, the object to create")
    missing_object: ObjectRef | None = None


class PlanStep(_M):
    """What answers one hypothesis: an action through the guard, or an escalation (never both)."""

    cause: Cause
    object: ObjectRef
    confidence: float
    action: Action | None = None
    escalation: Escalation | None = None
    reason: str = ""
