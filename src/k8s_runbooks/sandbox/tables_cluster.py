"""Server-side Table columns for nodes, configuration, quota and storage kinds, as kubectl's printers
(k8s.io/kubernetes/pkg/printers/internalversion) lay them out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k8s_runbooks.sandbox import endpointslices, quantity
from k8s_runbooks.sandbox.table_cells import _AGE, _NAME, _age, _col

Obj = dict[str, Any]
_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")


def node_status_text(node: Obj) -> str:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    status = [] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    status = status or ["Unknown"]
    if (node.get("spec") or {}).get("unschedulable"):
        status.append("SchedulingDisabled")
    return ",".join(status)


def node_roles(node: Obj) -> str:
    roles = set()
    for k, v in (node["metadata"].get("labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]:
            roles.add(k.split("/", 1)[1])
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_row(node: Obj) -> list[Any]:
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [node["metadata"]["name"], node_status_text(node), node_roles(node), _age(node),
            info.get("kubeletVersion") or "", addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def access_modes(modes: list[str] | None) -> str:
    return ",".join(_MODES.get(m, m) for m in modes or [])


def _pvc_row(pvc: Obj) -> list[Any]:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    phase = status.get("phase") or "Pending"
    if pvc["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    bound = bool(spec.get("volumeName"))
    capacity = ((status.get("capacity") or {}).get("storage") or "") if bound else ""
    return [pvc["metadata"]["name"], phase, spec.get("volumeName") or "", capacity,
            access_modes(status.get("accessModes")) if bound else "", spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>", _age(pvc), spec.get("volumeMode") or "Filesystem"]


def _pv_row(pv: Obj) -> list[Any]:
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    phase = "Terminating" if pv["metadata"].get("deletionTimestamp") else status.get("phase") or ""
    return [pv["metadata"]["name"], (spec.get("capacity") or {}).get("storage") or "", access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy") or "", phase, claim, spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason") or "", _age(pv),
            spec.get("volumeMode") or "Filesystem"]


def _storage_class_row(sc: Obj) -> list[Any]:
    name = sc["metadata"]["name"]
    if any((sc["metadata"].get("annotations") or {}).get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS):
        name += " (default)"
    return [name, sc.get("provisioner") or "", sc.get("reclaimPolicy") or "Delete",
            sc.get("volumeBindingMode") or "Immediate", str(bool(sc.get("allowVolumeExpansion"))).lower(), _age(sc)]


def quota_columns(quota: Obj) -> tuple[str, str]:
    """(REQUEST, LIMIT): `requests.cpu: 10/1, pods: 3/10` and `limits.memory: 1Gi/2Gi`, from the status."""
    status = quota.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    request, limit = [], []
    for name in sorted(hard):
        cell = f"{name}: {_canon(name, used.get(name, '0'))}/{_canon(name, hard[name])}"
        (limit if name.startswith("limits.") else request).append(cell)
    return ", ".join(request), ", ".join(limit)


def _canon(_name: str, value: Any) -> str:
    """Quantity.String(): `1000m` prints as `1`, `3072Mi` as `3Gi` (binary stays binary, decimal decimal)."""
    parsed = quantity.try_parse(value)
    if parsed is None:
        return str(value)
    return quantity.format_quantity(parsed, binary=str(value).endswith(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")))


def _quota_row(quota: Obj) -> list[Any]:
    request, limit = quota_columns(quota)
    return [quota["metadata"]["name"], _age(quota), request, limit]


_TABLES: dict[str, tuple[list[Obj], Callable[[Obj], list[Any]]]] = {
    "nodes": ([_NAME, _col("Status"), _col("Roles"), _AGE, _col("Version"), _col("Internal-IP", priority=1),
               _col("External-IP", priority=1), _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
               _col("Container-Runtime", priority=1)], _node_row),
    "secrets": ([_NAME, _col("Type"), _col("Data", "integer"), _AGE],
                lambda s: [s["metadata"]["name"], s.get("type") or "Opaque", len(s.get("data") or {}), _age(s)]),
    "configmaps": ([_NAME, _col("Data", "integer"), _AGE],
                   lambda c: [c["metadata"]["name"], len(c.get("data") or {}) + len(c.get("binaryData") or {}), _age(c)]),
    "serviceaccounts": ([_NAME, _col("Secrets", "integer"), _AGE],
                        lambda sa: [sa["metadata"]["name"], len(sa.get("secrets") or []), _age(sa)]),
    "resourcequotas": ([_NAME, _AGE, _col("Request"), _col("Limit")], _quota_row),
    "persistentvolumeclaims": ([_NAME, _col("Status"), _col("Volume"), _col("Capacity"), _col("Access Modes"),
                                _col("StorageClass"), _col("VolumeAttributesClass"), _AGE,
                                _col("VolumeMode", priority=1)], _pvc_row),
    "persistentvolumes": ([_NAME, _col("Capacity"), _col("Access Modes"), _col("Reclaim Policy"), _col("Status"),
                           _col("Claim"), _col("StorageClass"), _col("VolumeAttributesClass"), _col("Reason"), _AGE,
                           _col("VolumeMode", priority=1)], _pv_row),
    "endpointslices": ([_NAME, _col("AddressType"), _col("Ports"), _col("Endpoints"), _AGE],
                       lambda s: endpointslices.table_row(s, _age(s))),
    "storageclasses": ([_NAME, _col("Provisioner"), _col("ReclaimPolicy"), _col("VolumeBindingMode"),
                        _col("AllowVolumeExpansion"), _AGE], _storage_class_row),
}


def table_for(plural: str) -> tuple[list[Obj], Callable[[Obj], list[Any]]] | None:
    return _TABLES.get(plural)
