"""EndpointSlices (discovery.k8s.io/v1) mirrored from the Endpoints the endpoints controller writes: what
`kubectl describe service` reads for its `Endpoints:` line (kubectl 1.33+ lists slices, not Endpoints)."""

from __future__ import annotations

from typing import Any

from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.store import Obj, Store

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"


def _endpoints(subset: Obj) -> list[Obj]:
    out = []
    for key, ready in (("addresses", True), ("notReadyAddresses", False)):
        for a in subset.get(key) or []:
            ep: Obj = {"addresses": [a["ip"]], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
            if a.get("nodeName"):
                ep["nodeName"] = a["nodeName"]
            if a.get("targetRef"):
                ep["targetRef"] = a["targetRef"]
            out.append(ep)
    return sorted(out, key=lambda e: e["addresses"][0])


def sync(store: Store, svc: Obj, subsets: list[Obj]) -> None:
    """One slice per Endpoints subset (pods with the same ports); a service without endpoints keeps one empty
    slice, as the real controller does."""
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    existing = sorted(store.list("endpointslices", ns, label_selector=f"{SERVICE_NAME}={name}")[0],
                      key=lambda s: s["metadata"]["name"])
    # A slice port always has a name ("" when the service port has none): kubectl dereferences it.
    wanted = [{"endpoints": _endpoints(s), "ports": [{"name": "", **p} for p in s.get("ports") or []]}
              for s in subsets] or \
        [{"endpoints": [], "ports": []}]
    owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"], "controller": True,
             "blockOwnerDeletion": True}
    labels = {**(svc["metadata"].get("labels") or {}), SERVICE_NAME: name, MANAGED_BY: CONTROLLER}
    for i, body in enumerate(wanted):
        if i < len(existing):
            cur = existing[i]
            if cur.get("endpoints") != body["endpoints"] or cur.get("ports") != body["ports"]:
                cur.update(body)
                store.replace("endpointslices", cur)
            continue
        store.create("endpointslices", {"metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                                                     "ownerReferences": [owner]},
                                        "addressType": "IPv4", **body}, namespace=ns)
    for extra in existing[len(wanted):]:
        try:
            store.delete("endpointslices", ns, extra["metadata"]["name"])
        except ApiError:
            pass


def collect(store: Store, cache: Any, services: set[tuple[str, str]]) -> None:
    """Slices whose service is gone are deleted (their owner reference says so)."""
    for s in cache.list("endpointslices"):
        svc = (s["metadata"].get("labels") or {}).get(SERVICE_NAME)
        if svc and (s["metadata"]["namespace"], svc) not in services:
            try:
                store.delete("endpointslices", s["metadata"]["namespace"], s["metadata"]["name"])
            except ApiError:
                pass


def table_row(s: Obj, age: str) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in s.get("ports") or []) or "<unset>"
    addrs = [a for e in s.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [s["metadata"]["name"], s.get("addressType") or "IPv4", ports, text or "<unset>", age]
