"""The resource types the sandbox API serves, as discovery describes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    subresources: tuple[str, ...] = field(default=())
    singular: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version


# Nodes, configuration, quota and storage (the scheduler, admission, kubelet config and volume binding use them).
FIDELITY_RESOURCES = (
    Resource("nodes", "Node", "", "v1", False, ("no",), subresources=("status",), singular="node"),
    Resource("secrets", "Secret", "", "v1", True, (), singular="secret"),
    Resource("configmaps", "ConfigMap", "", "v1", True, ("cm",), singular="configmap"),
    # `token`: the TokenRequest API (sandbox/rbac_authz.py issues ServiceAccount tokens).
    Resource("serviceaccounts", "ServiceAccount", "", "v1", True, ("sa",), subresources=("token",),
             singular="serviceaccount"),
    Resource("resourcequotas", "ResourceQuota", "", "v1", True, ("quota",), subresources=("status",),
             singular="resourcequota"),
    Resource("persistentvolumeclaims", "PersistentVolumeClaim", "", "v1", True, ("pvc",), subresources=("status",),
             singular="persistentvolumeclaim"),
    Resource("persistentvolumes", "PersistentVolume", "", "v1", False, ("pv",), subresources=("status",),
             singular="persistentvolume"),
    Resource("storageclasses", "StorageClass", "storage.k8s.io", "v1", False, ("sc",), singular="storageclass"),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True, (), singular="endpointslice"),
)

RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource("namespaces", "Namespace", "", "v1", False, ("ns",), singular="namespace"),
        Resource("pods", "Pod", "", "v1", True, ("po",), subresources=("log", "status"), singular="pod"),
        Resource("events", "Event", "", "v1", True, ("ev",), singular="event"),
        Resource("services", "Service", "", "v1", True, ("svc",), singular="service"),
        Resource("endpoints", "Endpoints", "", "v1", True, ("ep",), singular="endpoints"),
        Resource("deployments", "Deployment", "apps", "v1", True, ("deploy",), subresources=("scale", "status"), singular="deployment"),
        Resource("replicasets", "ReplicaSet", "apps", "v1", True, ("rs",), subresources=("scale", "status"), singular="replicaset"),
        *FIDELITY_RESOURCES,
        # Stored and listed (the diagnosis reads them, so RBAC and 404s match a real cluster); no controller runs
        # a StatefulSet's or DaemonSet's pods here, and no ingress controller routes an Ingress.
        Resource("statefulsets", "StatefulSet", "apps", "v1", True, ("sts",), subresources=("scale", "status"), singular="statefulset"),
        Resource("daemonsets", "DaemonSet", "apps", "v1", True, ("ds",), subresources=("status",), singular="daemonset"),
        Resource("ingresses", "Ingress", "networking.k8s.io", "v1", True, ("ing",), subresources=("status",), singular="ingress"),
        # The guard keeps its cooldowns, run budgets and remediation locks in Leases (k8s_runbooks/guard_state.py).
        Resource("leases", "Lease", "coordination.k8s.io", "v1", True, singular="lease"),
        # Flow-run Jobs of the Prefect Kubernetes worker (sandbox/jobs.py runs them).
        Resource("jobs", "Job", "batch", "v1", True, subresources=("status",), singular="job"),
        # RBAC (enforced by sandbox/rbac_authz.py); reviews are answered, never stored.
        Resource("roles", "Role", "rbac.authorization.k8s.io", "v1", True, singular="role"),
        Resource("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "v1", True, singular="rolebinding"),
        Resource("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", False, singular="clusterrole"),
        Resource("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", False,
                 singular="clusterrolebinding"),
        Resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", "v1", False,
                 verbs=("create",), singular="selfsubjectaccessreview"),
        Resource("subjectaccessreviews", "SubjectAccessReview", "authorization.k8s.io", "v1", False,
                 verbs=("create",), singular="subjectaccessreview"),
    )
}

KIND_TO_PLURAL = {r.kind: r.plural for r in RESOURCES.values()}
