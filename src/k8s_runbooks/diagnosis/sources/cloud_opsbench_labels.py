"""The one table between our cause labels and Cloud-OpsBench's (root_cause, fault_taxonomy, fault_object form).
Causes with no benchmark counterpart map to None and are left out of the benchmark's ranked list."""

from __future__ import annotations

from k8s_runbooks.diagnosis.evidence import ObjectRef
from k8s_runbooks.diagnosis.hypothesis import Cause, Layer

C = Cause
LABELS: dict[Cause, str | None] = {
    C.quota_cpu_exceeded: "namespace_cpu_quota_exceeded",
    C.quota_memory_exceeded: "namespace_memory_quota_exceeded",
    C.quota_pods_exceeded: "namespace_pod_quota_exceeded",
    C.quota_services_exceeded: "namespace_service_quota_exceeded",
    C.quota_storage_exceeded: "namespace_storage_quota_exceeded",
    C.service_account_missing: "missing_service_account",
    C.node_selector_unsatisfiable: "node_selector_mismatch",
    C.node_affinity_unsatisfiable: "node_affinity_mismatch",
    C.anti_affinity_unsatisfiable: "pod_anti_affinity_conflict",
    C.taint_not_tolerated: "taint_toleration_mismatch",
    C.nodes_cordoned: "node_cordon_mismatch",
    C.insufficient_cpu: "cpu_capacity_mismatch",
    C.insufficient_memory: "memory_capacity_mismatch",
    C.volume_claimed_by_other: "pv_binding_occupied",
    C.claim_selector_unmatched: "pvc_selector_mismatch",
    C.storage_class_missing: "pvc_storage_class_mismatch",
    C.claim_capacity_unavailable: "pvc_capacity_mismatch",
    C.claim_access_mode_unavailable: "pvc_access_mode_mismatch",
    C.image_not_found: "incorrect_image_reference",
    C.registry_unresolvable: "image_registry_dns_failure",
    C.image_pull_unauthorized: "missing_image_pull_secret",
    C.secret_missing: "missing_secret_binding",
    C.config_map_missing: "missing_secret_binding",
    C.volume_permission_denied: "volume_mount_permission_denied",
    C.oom_killed: "oom_killed",
    C.liveness_probe_wrong_port: "liveness_probe_incorrect_port",
    C.liveness_probe_wrong_protocol: "liveness_probe_incorrect_protocol",
    C.liveness_probe_too_aggressive: "liveness_probe_incorrect_timing",
    C.readiness_probe_wrong_port: "readiness_probe_incorrect_port",
    C.readiness_probe_wrong_protocol: "readiness_probe_incorrect_protocol",
    C.sidecar_port_conflict: "service_sidecar_port_conflict",
    C.db_auth_failed: "mysql_invalid_credentials",
    C.db_wrong_port: "mysql_invalid_port",
    C.db_read_only: "db_read_only",
    C.db_connections_exhausted: "db_connection_exhaustion",
    C.scaled_to_zero: "deployment_zero_replicas",
    C.crash_after_rollout: None,
    C.app_crash: None,
    C.service_selects_no_pods: "service_selector_mismatch",
    C.service_target_port_wrong: "service_port_mapping_mismatch",
    C.service_protocol_wrong: "service_protocol_mismatch",
    C.env_address_wrong: "service_env_var_address_mismatch",
    C.gateway_route_wrong: "gateway_misroute",
    C.dns_resolution_failed: "service_dns_resolution_failure",
    C.cpu_saturated: "pod_cpu_overload",
    C.pod_network_delay: "pod_network_delay",
    C.slow_revision: None,
    C.slow_pods: None,
    C.node_not_ready: None,
    C.kubelet_down: "kubelet_unavailable",
    C.container_runtime_down: "containerd_unavailable",
    C.kube_proxy_down: "kube_proxy_unavailable",
    C.scheduler_down: "kube_scheduler_unavailable",
    C.node_network_delay: "node_network_delay",
    C.node_packet_loss: "node_network_packet_loss",
}

TAXONOMY: dict[Layer, str] = {
    Layer.admission: "Admission_Fault", Layer.scheduling: "Scheduling_Fault", Layer.startup: "Startup_Fault",
    Layer.runtime: "Runtime_Fault", Layer.routing: "Service_Routing_Fault", Layer.performance: "Performance_Fault",
    Layer.infrastructure: "Infrastructure_Fault",
}


def fault_object(ref: ObjectRef) -> str:
    """The benchmark's spelling: app/<workload>, node/<node>, namespace/<namespace>."""
    if ref.kind == "Node":
        return f"node/{ref.name}"
    if ref.kind == "Namespace":
        return f"namespace/{ref.name}"
    return f"app/{ref.name}"
