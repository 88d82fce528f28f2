"""The persistentvolume controller of the sandbox: claims bind to matching volumes, the sandbox's own
provisioner makes volumes for its StorageClass, and a claim that cannot bind says why, in the controller's
words (`no persistent volumes available for this claim and no storage class is set`,
`storageclass.storage.k8s.io "fast" not found`, `waiting for first consumer to be created before binding`).

Volumes are records only: no directory is mounted into a pod (pods are local processes). What matters for
the faults is binding, and a Pending claim keeps its pod unschedulable (see scheduler.py).
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

from k8s_runbooks.sandbox import quantity
from k8s_runbooks.sandbox.admission import DEFAULT_CLASS_ANNOTATION
from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.scheduler import SELECTED_NODE
from k8s_runbooks.sandbox.store import Obj, Store, WatchEvent

PROVISIONER = "sandbox.k8s-runbooks.io/hostpath"
DEFAULT_CLASS = "standard"
RESYNC_SECONDS = 15.0  # the real controller's resync: how often a claim that cannot bind says so again
COMPONENT = "persistentvolume-controller"


def default_storage_class() -> Obj:
    return {"metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True}


def ensure_default_storage_class(store: Store) -> None:
    if store.try_get("storageclasses", None, DEFAULT_CLASS) is None:
        try:
            store.create("storageclasses", default_storage_class())
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise


def _storage(obj: Obj, *path: str) -> Fraction:
    cur: Any = obj
    for p in path:
        cur = (cur or {}).get(p)
    return quantity.try_parse(cur) or Fraction(0)


class VolumeController:
    def __init__(self, store: Store, informer: Any, recorder: Any) -> None:
        self.store = store
        self.cache = informer
        self.recorder = recorder
        self._next: dict[str, float] = {}  # claim uid -> next periodic attempt

    def keys_for(self, ev: WatchEvent) -> list[tuple[str, str, str]]:
        meta = ev.object["metadata"]
        if ev.resource == "persistentvolumeclaims":
            if ev.type == "DELETED":
                self._next.pop(meta.get("uid", ""), None)
                return [("pvc-released", meta.get("namespace", ""), meta["name"])]
            return [("pvc", meta.get("namespace", ""), meta["name"])]
        if ev.resource in ("persistentvolumes", "storageclasses"):
            self._next.clear()  # every waiting claim gets another look at once
        return []

    def all_keys(self) -> list[tuple[str, str, str]]:
        now = time.monotonic()
        keys = [("pvc", p["metadata"]["namespace"], p["metadata"]["name"]) for p in self.cache.list("persistentvolumeclaims")
                if (p.get("status") or {}).get("phase") != "Bound" and now >= self._next.get(p["metadata"]["uid"], 0.0)]
        keys += [("pv", "", v["metadata"]["name"]) for v in self.cache.list("persistentvolumes")
                 if (v.get("status") or {}).get("phase") == "Bound"]
        return keys

    def handle(self, kind: str, ns: str, name: str) -> bool:
        if kind == "pvc":
            self.sync_claim(ns, name)
        elif kind == "pv":
            self.sync_volume(name)
        elif kind == "pvc-released":
            for pv in self.cache.list("persistentvolumes"):
                ref = (pv.get("spec") or {}).get("claimRef") or {}
                if ref.get("namespace") == ns and ref.get("name") == name:
                    self.sync_volume(pv["metadata"]["name"])
        else:
            return False
        return True

    # -------------------------------------------------------------------------------- claims
    def sync_claim(self, ns: str, name: str) -> None:
        pvc = self.store.try_get("persistentvolumeclaims", ns, name)
        if pvc is None or (pvc.get("status") or {}).get("phase") == "Bound" or pvc["metadata"].get("deletionTimestamp"):
            return
        uid = pvc["metadata"]["uid"]
        if time.monotonic() < self._next.get(uid, 0.0):
            return
        self._next[uid] = time.monotonic() + RESYNC_SECONDS
        spec = pvc.get("spec") or {}
        class_name = spec.get("storageClassName") or ""
        pv = self._matching_volume(pvc, class_name)
        if pv is not None:
            self._bind(pvc, pv)
            return
        if not class_name:
            self.recorder.record(pvc, "Normal", "FailedBinding",
                                 "no persistent volumes available for this claim and no storage class is set",
                                 component=COMPONENT)
            return
        sc = self.store.try_get("storageclasses", None, class_name)
        if sc is None:
            self.recorder.record(pvc, "Warning", "ProvisioningFailed",
                                 f'storageclass.storage.k8s.io "{class_name}" not found', component=COMPONENT)
            return
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and \
                not (pvc["metadata"].get("annotations") or {}).get(SELECTED_NODE):
            self.recorder.record(pvc, "Normal", "WaitForFirstConsumer",
                                 "waiting for first consumer to be created before binding", component=COMPONENT)
            return
        if sc.get("provisioner") != PROVISIONER:
            self.recorder.record(pvc, "Normal", "ExternalProvisioning", (
                f"Waiting for a volume to be created either by the external provisioner '{sc.get('provisioner')}' or "
                "manually by the system administrator. If volume creation is delayed, please verify that the "
                "provisioner is running and correctly registered."), component=COMPONENT)
            return
        self._provision(pvc, sc)

    def _matching_volume(self, pvc: Obj, class_name: str) -> Obj | None:
        spec = pvc.get("spec") or {}
        want = _storage(spec, "resources", "requests", "storage")
        modes = set(spec.get("accessModes") or [])
        candidates = []
        for pv in self.cache.list("persistentvolumes"):
            pspec = pv.get("spec") or {}
            ref = pspec.get("claimRef") or {}
            if spec.get("volumeName") and spec["volumeName"] != pv["metadata"]["name"]:
                continue
            if ref and (ref.get("namespace"), ref.get("name")) != (pvc["metadata"]["namespace"], pvc["metadata"]["name"]):
                continue
            if (pv.get("status") or {}).get("phase") not in ("Available", None) and not ref:
                continue
            if (pspec.get("storageClassName") or "") != class_name or not modes <= set(pspec.get("accessModes") or []):
                continue
            if (pspec.get("volumeMode") or "Filesystem") != (spec.get("volumeMode") or "Filesystem"):
                continue
            size = _storage(pspec, "capacity", "storage")
            if size >= want:
                candidates.append((size, pv["metadata"]["name"], pv))
        return min(candidates)[2] if candidates else None  # the smallest volume that fits

    def _provision(self, pvc: Obj, sc: Obj) -> None:
        ns, name, uid = pvc["metadata"]["namespace"], pvc["metadata"]["name"], pvc["metadata"]["uid"]
        self.recorder.record(pvc, "Normal", "Provisioning",
                             f'External provisioner is provisioning volume for claim "{ns}/{name}"', component=PROVISIONER)
        spec = pvc.get("spec") or {}
        pv_name = f"pvc-{uid}"
        pv = {"metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
              "spec": {"capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
                       "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                       "storageClassName": sc["metadata"]["name"], "volumeMode": spec.get("volumeMode") or "Filesystem",
                       "hostPath": {"path": f"/var/lib/sandbox/volumes/{pv_name}", "type": "DirectoryOrCreate"},
                       "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
                                    "uid": uid}}}
        try:
            created = self.store.create("persistentvolumes", pv)
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
            created = self.store.get("persistentvolumes", None, pv_name)
        self.recorder.record(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}",
                             component=PROVISIONER)
        self._bind(pvc, created)

    def _bind(self, pvc: Obj, pv: Obj) -> None:
        ns, name = pvc["metadata"]["namespace"], pvc["metadata"]["name"]
        pv_name = pv["metadata"]["name"]

        def claim_ref(o: Obj) -> None:
            o["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
                                     "uid": pvc["metadata"]["uid"], "resourceVersion": pvc["metadata"]["resourceVersion"]}
            o["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bound-by-controller"] = "yes"
        self.store.mutate("persistentvolumes", None, pv_name, claim_ref)
        self.store.mutate("persistentvolumes", None, pv_name, lambda o: o.__setitem__("status", {"phase": "Bound"}),
                          subresource="status")

        def volume_name(o: Obj) -> None:
            o["spec"]["volumeName"] = pv_name
            ann = o["metadata"].setdefault("annotations", {})
            ann["pv.kubernetes.io/bind-completed"] = "yes"
            ann["pv.kubernetes.io/bound-by-controller"] = "yes"
        self.store.mutate("persistentvolumeclaims", ns, name, volume_name)
        pspec = pv.get("spec") or {}
        status = {"phase": "Bound", "accessModes": pspec.get("accessModes") or [],
                  "capacity": dict(pspec.get("capacity") or {})}
        self.store.mutate("persistentvolumeclaims", ns, name, lambda o: o.__setitem__("status", status),
                          subresource="status")

    # -------------------------------------------------------------------------------- volumes
    def sync_volume(self, name: str) -> None:
        """A volume whose claim is gone is Released (Retain) or deleted (Delete, the provisioner's job)."""
        pv = self.store.try_get("persistentvolumes", None, name)
        if pv is None or (pv.get("status") or {}).get("phase") != "Bound":
            return
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        claim = self.cache.get("persistentvolumeclaims", ref.get("namespace", ""), ref.get("name", ""))
        if claim is not None and claim["metadata"].get("uid") == ref.get("uid", claim["metadata"].get("uid")):
            return
        if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            try:
                self.store.delete("persistentvolumes", None, name)
            except ApiError:
                pass
            return
        self.store.mutate("persistentvolumes", None, name, lambda o: o.__setitem__("status", {"phase": "Released"}),
                          subresource="status")
