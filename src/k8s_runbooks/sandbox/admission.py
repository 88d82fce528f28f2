"""Admission plugins of the sandbox API, with kube-apiserver's messages: ServiceAccount (a pod naming a
missing service account is forbidden), DefaultTolerationSeconds, DefaultStorageClass, ResourceQuota (usage
computed from the stored objects under the store lock, so two creates cannot both squeeze under a limit),
and the namespace's `default` ServiceAccount, created with the namespace as the serviceaccount controller does.

They run on every create, whoever sends it: kubectl, the official client, or the sandbox's own
controllers (a ReplicaSet's pods are admitted exactly like a user's).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from k8s_runbooks.sandbox import quantity
from k8s_runbooks.sandbox.errors import ApiError

Obj = dict[str, Any]

DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
_COMPUTE = ("cpu", "memory")
QUOTA_VALIDATION = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}


def forbidden(plural: str, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{plural} "{name}" is forbidden: {message}', {"name": name, "kind": plural})


def _name_for_error(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("name") or meta.get("generateName") or ""


# ------------------------------------------------------------------------------------------ pod usage
def container_resources(c: Obj) -> tuple[dict[str, Fraction], dict[str, Fraction]]:
    """(requests, limits) of a container; requests default to limits, as the API server defaults them."""
    res = c.get("resources") or {}
    limits = {k: q for k, v in (res.get("limits") or {}).items() if (q := quantity.try_parse(v)) is not None}
    requests = {k: q for k, v in (res.get("requests") or {}).items() if (q := quantity.try_parse(v)) is not None}
    for k, v in limits.items():
        requests.setdefault(k, v)
    return requests, limits


def pod_requests(pod: Obj) -> tuple[dict[str, Fraction], dict[str, Fraction]]:
    """Effective (requests, limits) of a pod: the sum over containers, or the largest init container if larger."""
    spec = pod.get("spec") or {}
    req: dict[str, Fraction] = {}
    lim: dict[str, Fraction] = {}
    for c in spec.get("containers") or []:
        r, l_ = container_resources(c)
        for k, v in r.items():
            req[k] = req.get(k, Fraction(0)) + v
        for k, v in l_.items():
            lim[k] = lim.get(k, Fraction(0)) + v
    for c in spec.get("initContainers") or []:
        r, l_ = container_resources(c)
        for k, v in r.items():
            req[k] = max(req.get(k, Fraction(0)), v)
        for k, v in l_.items():
            lim[k] = max(lim.get(k, Fraction(0)), v)
    return req, lim


def _pod_counts_for_quota(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def object_usage(plural: str, obj: Obj) -> dict[str, Fraction]:
    """What one object charges against a quota, by quota resource name."""
    one = Fraction(1)
    if plural == "pods":
        if not _pod_counts_for_quota(obj):
            return {}
        req, lim = pod_requests(obj)
        usage = {"pods": one, "count/pods": one}
        for r in _COMPUTE:
            if r in req:
                usage[r] = usage[f"requests.{r}"] = req[r]
            if r in lim:
                usage[f"limits.{r}"] = lim[r]
        return usage
    if plural == "services":
        usage = {"services": one, "count/services": one}
        stype = (obj.get("spec") or {}).get("type") or "ClusterIP"
        if stype == "LoadBalancer":
            usage["services.loadbalancers"] = one
        if stype in ("LoadBalancer", "NodePort"):
            usage["services.nodeports"] = Fraction(len((obj.get("spec") or {}).get("ports") or []))
        return usage
    if plural == "persistentvolumeclaims":
        spec = obj.get("spec") or {}
        storage = quantity.try_parse(((spec.get("resources") or {}).get("requests") or {}).get("storage")) or Fraction(0)
        usage = {"persistentvolumeclaims": one, "count/persistentvolumeclaims": one, "requests.storage": storage}
        sc = spec.get("storageClassName")
        if sc:
            usage[f"{sc}.storageclass.storage.k8s.io/requests.storage"] = storage
            usage[f"{sc}.storageclass.storage.k8s.io/persistentvolumeclaims"] = one
        return usage
    if plural in ("configmaps", "secrets"):
        return {plural: one, f"count/{plural}": one}
    return {}


QUOTA_PLURALS = ("pods", "services", "persistentvolumeclaims", "configmaps", "secrets")


def _plural_of(key: str) -> str | None:
    """Which kind of object a quota resource name counts."""
    if key in ("pods", "count/pods", "cpu", "memory") or key.startswith(("requests.cpu", "requests.memory", "limits.")):
        return "pods"
    if key.startswith(("services", "count/services")):
        return "services"
    if key in ("persistentvolumeclaims", "count/persistentvolumeclaims", "requests.storage") \
            or ".storageclass.storage.k8s.io/" in key:
        return "persistentvolumeclaims"
    if key in ("configmaps", "secrets", "count/configmaps", "count/secrets"):
        return key.removeprefix("count/")
    return None


def namespace_usage(store: Any, namespace: str, keys: Iterable[str]) -> dict[str, Fraction]:
    """Current usage of `keys` in the namespace (zero for tracked keys nothing uses)."""
    wanted = set(keys)
    used = {k: Fraction(0) for k in wanted}
    for plural in sorted({p for k in wanted if (p := _plural_of(k))}):
        for obj in store.list(plural, namespace)[0]:
            for k, v in object_usage(plural, obj).items():
                if k in wanted:
                    used[k] += v
    return used


def format_usage(values: dict[str, Fraction]) -> str:
    return ",".join(f"{k}={quantity.format_resource(k, v)}" for k, v in sorted(values.items()))


# ------------------------------------------------------------------------------------------ the plugins
class Admission:
    """The sandbox's admission chain (see the module docstring)."""

    # -------------------------------------------------------------------------------- mutating
    def mutate(self, store: Any, plural: str, obj: Obj) -> None:
        if plural == "pods":
            self._service_account(store, obj)
            self._default_tolerations(obj)
        elif plural == "secrets":
            self._secret_data(obj)
        elif plural == "services":
            self._service_defaults(store, obj)
        elif plural == "persistentvolumeclaims":
            self._default_storage_class(store, obj)
            obj.setdefault("metadata", {}).setdefault("finalizers", ["kubernetes.io/pvc-protection"])
            obj["status"] = {"phase": "Pending"}
        elif plural == "persistentvolumes":
            obj.setdefault("metadata", {}).setdefault("finalizers", ["kubernetes.io/pv-protection"])
            obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
            obj["spec"].setdefault("volumeMode", "Filesystem")
            obj["status"] = {"phase": "Available" if not obj["spec"].get("claimRef") else "Bound"}
        elif plural == "storageclasses":
            obj.setdefault("reclaimPolicy", "Delete")
            obj.setdefault("volumeBindingMode", "Immediate")
        elif plural == "resourcequotas":
            hard = dict((obj.get("spec") or {}).get("hard") or {})
            for k, v in hard.items():
                try:
                    quantity.parse(v)
                except quantity.QuantityError:
                    raise ApiError.invalid("ResourceQuota", _name_for_error(obj), [
                        (f"spec.hard[{k}]", f'Invalid value: "{v}": quantities must match the regular expression '
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]) from None
            ns = (obj.get("metadata") or {}).get("namespace") or "default"
            used = namespace_usage(store, ns, hard)
            obj["status"] = {"hard": hard, "used": {k: quantity.format_resource(k, v) for k, v in used.items()}}

    @staticmethod
    def _service_account(store: Any, pod: Obj) -> None:
        spec = pod.setdefault("spec", {})
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = sa
        ns = pod["metadata"].get("namespace") or "default"
        if store.try_get("namespaces", None, ns) is None:
            return  # the store answers the namespace's own 404
        if store.try_get("serviceaccounts", ns, sa) is None:
            raise forbidden("pods", _name_for_error(pod),
                            f'error looking up service account {ns}/{sa}: serviceaccount "{sa}" not found')

    @staticmethod
    def _default_tolerations(pod: Obj) -> None:
        tolerations = pod["spec"].setdefault("tolerations", [])
        for default in DEFAULT_TOLERATIONS:
            if not any(t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute")
                       for t in tolerations):
                tolerations.append(dict(default))

    @staticmethod
    def _service_defaults(store: Any, svc: Obj) -> None:
        """Service defaulting and the ClusterIP allocator (10.96.0.0/16; nothing routes to it, pods are reached
        through their endpoints)."""
        spec = svc.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        if spec["type"] == "ExternalName" or spec.get("clusterIP") == "None":
            return
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if not spec.get("clusterIP"):
            used = {s_["spec"].get("clusterIP") for s_ in store.list("services")[0] if s_.get("spec")}
            n = 10
            while f"10.96.{n // 256}.{n % 256}" in used or n % 256 in (0, 255):
                n += 1
            spec["clusterIP"] = f"10.96.{n // 256}.{n % 256}"
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec["type"] in ("NodePort", "LoadBalancer"):
            taken = {p_.get("nodePort") for s_ in store.list("services")[0] for p_ in (s_.get("spec") or {}).get("ports") or []}
            free = (n for n in range(30000, 32768) if n not in taken)
            for p in spec.get("ports") or []:
                p.setdefault("nodePort", next(free))
            spec.setdefault("externalTrafficPolicy", "Cluster")

    @staticmethod
    def _secret_data(secret: Obj) -> None:
        secret.setdefault("type", "Opaque")
        string_data = secret.pop("stringData", None) or {}
        if string_data:
            data = secret.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    @staticmethod
    def _default_storage_class(store: Any, pvc: Obj) -> None:
        spec = pvc.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        if "storageClassName" in spec and spec["storageClassName"] is not None:
            return
        for sc in store.list("storageclasses")[0]:
            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                spec["storageClassName"] = sc["metadata"]["name"]
                return

    # -------------------------------------------------------------------------------- validating
    def validate(self, store: Any, plural: str, obj: Obj) -> None:
        if plural not in QUOTA_PLURALS:
            return
        ns = obj["metadata"].get("namespace") or "default"
        quotas = store.list("resourcequotas", ns)[0]
        if not quotas:
            return
        requested = object_usage(plural, obj)
        name = obj["metadata"]["name"]
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = {k: quantity.try_parse(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
            hard = {k: v for k, v in hard.items() if v is not None}
            if plural == "pods":
                missing = self._missing_compute(obj, set(hard) & QUOTA_VALIDATION)
                if missing:
                    raise forbidden(plural, name, f"failed quota: {quota['metadata']['name']}: {missing}")
            tracked = {k: v for k, v in requested.items() if k in hard}
            if not tracked:
                continue
            used = namespace_usage(store, ns, tracked)
            exceeded = sorted(k for k, v in tracked.items() if used[k] + v > hard[k])
            if exceeded:
                raise forbidden(plural, name, (
                    f"exceeded quota: {quota['metadata']['name']}, "
                    f"requested: {format_usage({k: tracked[k] for k in exceeded})}, "
                    f"used: {format_usage({k: used[k] for k in exceeded})}, "
                    f"limited: {format_usage({k: hard[k] for k in exceeded})}"))

    @staticmethod
    def _missing_compute(pod: Obj, required: set[str]) -> str:
        """kube-apiserver's `must specify limits.cpu for: app; requests.memory for: app,sidecar`."""
        if not required:
            return ""
        missing: dict[str, set[str]] = {}
        for c in (pod.get("spec") or {}).get("containers") or []:
            req, lim = container_resources(c)
            present = set()
            for r in _COMPUTE:
                if r in req:
                    present |= {r, f"requests.{r}"}
                if r in lim:
                    present.add(f"limits.{r}")
            for r in required - present:
                missing.setdefault(r, set()).add(c.get("name", ""))
        return "; ".join(f"{'must specify ' if i == 0 else ''}{r} for: {','.join(sorted(names))}"
                         for i, (r, names) in enumerate(sorted(missing.items())))

    # -------------------------------------------------------------------------------- after the write
    def created(self, store: Any, plural: str, obj: Obj) -> None:
        if plural == "namespaces":
            ensure_default_service_account(store, obj["metadata"]["name"])


def ensure_default_service_account(store: Any, namespace: str) -> None:
    """The serviceaccount controller's job: every namespace has a `default` ServiceAccount."""
    if store.try_get("serviceaccounts", namespace, "default") is None:
        try:
            store.create("serviceaccounts", {"metadata": {"name": "default", "namespace": namespace}},
                         namespace=namespace)
        except ApiError:
            pass  # created meanwhile, or the namespace is going away


def install(store: Any) -> None:
    store.add_admission(Admission())


class QuotaController:
    """The resourcequota controller: `status.hard` and `status.used` follow the spec and the namespace's objects
    (what `kubectl get/describe resourcequota` prints)."""

    def __init__(self, store: Any, informer: Any) -> None:
        self.store = store
        self.cache = informer

    def keys_for(self, ev: Any) -> list[tuple[str, str, str]]:
        ns = ev.object["metadata"].get("namespace") or ""
        if ev.resource == "resourcequotas" and ev.type != "DELETED":
            return [("quota", ns, ev.object["metadata"]["name"])]
        if ev.resource in QUOTA_PLURALS and self.cache.list("resourcequotas", ns):
            return [("quota", ns, q["metadata"]["name"]) for q in self.cache.list("resourcequotas", ns)]
        return []

    def all_keys(self) -> list[tuple[str, str, str]]:
        return [("quota", q["metadata"]["namespace"], q["metadata"]["name"]) for q in self.cache.list("resourcequotas")]

    def handle(self, kind: str, ns: str, name: str) -> bool:
        if kind != "quota":
            return False
        quota = self.store.try_get("resourcequotas", ns, name)
        if quota is None:
            return True
        hard = dict((quota.get("spec") or {}).get("hard") or {})
        used = namespace_usage(self.store, ns, hard)
        status = {"hard": hard, "used": {k: quantity.format_resource(k, v) for k, v in sorted(used.items())}}
        if status != (quota.get("status") or {}):
            self.store.mutate("resourcequotas", ns, name, lambda o: o.__setitem__("status", status),
                              subresource="status")
        return True
