"""Controllers of the sandbox: Deployment → ReplicaSets, ReplicaSet → Pods, Endpoints, garbage
collection, and the event recorder they share with the kubelet; the scheduler (scheduler.py), the node
lifecycle (nodes.py), volume binding (volumes.py) and quota status (admission.py) run in the same loop.

All controllers run in one thread: store listeners only put keys on a queue (they are called under the
store lock); the loop coalesces them and also resyncs everything every `resync_seconds`. Every write
goes through the Store, so a 409 Conflict just means "re-read and try again on the next pass".
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from k8s_runbooks.sandbox import endpointslices
from k8s_runbooks.sandbox.admission import QuotaController, ensure_default_service_account
from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.nodes import NodeController
from k8s_runbooks.sandbox.scheduler import Scheduler
from k8s_runbooks.sandbox.selectors import parse_label_selector
from k8s_runbooks.sandbox.store import Obj, Store, WatchEvent, now_iso
from k8s_runbooks.sandbox.volumes import VolumeController

log = logging.getLogger(__name__)

FAILED_CREATE_BACKOFF = (1.0, 30.0)  # a ReplicaSet whose pods are refused tries again after 1 s, doubling to 30 s
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"


def safe_encode(data: bytes, length: int) -> str:
    n = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, len(HASH_ALPHABET))
        out.append(HASH_ALPHABET[r])
    return "".join(out)


def template_hash(template: Obj) -> str:
    """Stable 10-char hash of a pod template (ignoring any pod-template-hash label it carries)."""
    t = json.loads(json.dumps(template))
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return safe_encode(json.dumps(t, sort_keys=True, separators=(",", ":")).encode(), 10)


# ------------------------------------------------------------------------------------------ pod helpers
def is_active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def is_ready(pod: Obj) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def owner_ref(owner: Obj) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        pct = float(value[:-1] or 0) * total / 100.0
        return int(math.ceil(pct) if round_up else math.floor(pct))
    return int(value)


# ------------------------------------------------------------------------------------------ informer
class Informer:
    """Read-only cache of the objects the runtime reads often, fed by the store's listener.

    Like client-go's informers: controllers, the kubelet and the metrics read from here instead of
    deep-copying every pod out of the store on each pass. Returned objects are shared: never mutate them.
    """

    PLURALS = ("pods", "replicasets", "deployments", "services", "endpoints", "nodes", "persistentvolumeclaims",
               "persistentvolumes", "storageclasses", "resourcequotas", "secrets", "configmaps", "serviceaccounts",
               "endpointslices")

    def __init__(self, store: Store) -> None:
        self.store = store
        self._objs: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in self.PLURALS}

    def start(self) -> None:
        self.store.add_listener(self._on_event)
        for plural in self.PLURALS:
            for obj in self.store.list(plural)[0]:
                self._put(plural, obj)

    @staticmethod
    def _rv(obj: Obj) -> int:
        return int(obj["metadata"].get("resourceVersion") or 0)

    def _put(self, plural: str, obj: Obj) -> None:
        key = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        cur = self._objs[plural].get(key)
        if cur is None or self._rv(cur) <= self._rv(obj):
            self._objs[plural][key] = obj

    def _on_event(self, ev: WatchEvent) -> None:
        objs = self._objs.get(ev.resource)
        if objs is None:
            return
        if ev.type == "DELETED":
            key = (ev.object["metadata"].get("namespace") or "", ev.object["metadata"]["name"])
            cur = objs.get(key)
            if cur is not None and self._rv(cur) <= ev.resource_version:
                del objs[key]
        else:
            self._put(ev.resource, ev.object)  # the event's object is already a private copy

    def list(self, plural: str, namespace: str | None = None) -> list[Obj]:
        items = list(self._objs[plural].items())
        return [o for (ns, _), o in sorted(items, key=lambda kv: kv[0]) if namespace is None or ns == namespace]

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self._objs[plural].get((namespace, name))


# ------------------------------------------------------------------------------------------ events
class EventRecorder:
    """Writes core/v1 Events like client-go's recorder: same object+reason+message → count++; more than
    `SIMILAR_LIMIT` different messages of one object and reason within 10 minutes (a quota error names a new pod
    each time) go into one `(combined from similar events): ...` event, as client-go's EventCorrelator does."""

    SIMILAR_LIMIT, SIMILAR_WINDOW = 10, 600.0

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._names: dict[tuple[str, str, str, str, str], str] = {}
        self._similar: dict[tuple[str, str, str, str, str], dict[str, float]] = {}

    def _combined(self, uid: str, type_: str, reason: str, message: str, component: str, field_path: str) -> str:
        seen = self._similar.setdefault((uid, type_, reason, component, field_path), {})
        now = time.monotonic()
        for m in [m for m, t in seen.items() if now - t > self.SIMILAR_WINDOW]:
            del seen[m]
        if message not in seen and len(seen) >= self.SIMILAR_LIMIT:
            return "(combined from similar events): " + message
        seen[message] = now
        return message

    def record(self, obj: Obj, type_: str, reason: str, message: str, *, component: str = "kubelet",
               field_path: str | None = None, host: str | None = None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        ts = now_iso()
        with self._lock:
            message = self._combined(meta.get("uid", ""), type_, reason, message, component, field_path or "")
            combined = message.startswith("(combined from similar events): ")
            key = (meta.get("uid", ""), reason, "(combined)" if combined else message, component, field_path or "")
            name = self._names.get(key)
            if name:
                def bump(ev: Obj) -> None:
                    ev["count"] = int(ev.get("count") or 1) + 1
                    ev["lastTimestamp"] = ts
                try:
                    self._store.mutate("events", ns, name, bump)
                    return
                except ApiError:
                    pass  # deleted meanwhile (e.g. namespace gone): record anew
            involved = {"kind": obj.get("kind"), "name": meta["name"], "namespace": ns, "uid": meta.get("uid"),
                        "apiVersion": obj.get("apiVersion"), "resourceVersion": meta.get("resourceVersion")}
            if field_path:
                involved["fieldPath"] = field_path
            name = f"{meta['name']}.{time.time_ns():x}"
            event = {
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved,
                "reason": reason, "message": message, "type": type_,
                "source": {"component": component, **({"host": host} if host else {})},
                "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
                "reportingComponent": component, "reportingInstance": host or "",
            }
            try:
                self._store.create("events", event, namespace=ns)
                self._names[key] = name
            except ApiError as exc:  # namespace being deleted: nothing to record against
                log.debug("event %s/%s not recorded: %s", ns, reason, exc.message)

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._names if k[0] == uid]:
                del self._names[key]
            for skey in [k for k in self._similar if k[0] == uid]:
                del self._similar[skey]


# ------------------------------------------------------------------------------------------ controllers
class Controllers:
    def __init__(self, store: Store, recorder: EventRecorder, informer: Informer, *,
                 resync_seconds: float = 1.0) -> None:
        self.store = store
        self.cache = informer
        self.recorder = recorder
        self.resync_seconds = resync_seconds
        self._queue: queue.SimpleQueue[tuple[str, str, str] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-controllers", daemon=True)
        self._create_backoff: dict[str, tuple[float, float]] = {}  # ReplicaSet uid -> (next attempt, delay)
        self.scheduler = Scheduler(store, informer, recorder)
        # Each has keys_for(event), all_keys() and handle(kind, ns, name) -> bool: the loop drives them too.
        self.extras: list[Any] = [self.scheduler, NodeController(store, informer, recorder),
                                  VolumeController(store, informer, recorder), QuotaController(store, informer)]

    # -------------------------------------------------------------------------------- plumbing
    def start(self) -> None:
        self.store.add_listener(self._on_event)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.resource == "events":
            return
        for extra in self.extras:
            for key in extra.keys_for(ev):
                self._queue.put(key)
        meta = ev.object["metadata"]
        ns = meta.get("namespace") or ""
        if ev.resource == "pods":
            self._queue.put(("pod", ns, meta["name"]))
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "ReplicaSet":
                    self._queue.put(("rs", ns, ref["name"]))
            self._queue.put(("endpoints-ns", ns, ""))
        elif ev.resource == "replicasets":
            self._queue.put(("rs", ns, meta["name"]))
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "Deployment":
                    self._queue.put(("deploy", ns, ref["name"]))
        elif ev.resource == "deployments":
            self._queue.put(("deploy", ns, meta["name"]))
        elif ev.resource == "services":
            self._queue.put(("svc", ns, meta["name"]))
        elif ev.resource in ("resourcequotas", "serviceaccounts"):
            # What refused a ReplicaSet's pods may have changed: let them try again now.
            self._create_backoff.clear()
            if ev.resource == "serviceaccounts" and ev.type == "DELETED" and meta["name"] == "default":
                self._queue.put(("default-sa", ns, ""))
        if ev.type == "DELETED" and ev.resource in ("deployments", "replicasets", "services"):
            self._queue.put(("gc", "", ""))

    def _run(self) -> None:
        next_resync = 0.0
        while not self._stop.is_set():
            keys: set[tuple[str, str, str]] = set()
            timeout = max(0.0, next_resync - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
                if item is not None:
                    keys.add(item)
                    time.sleep(0.02)  # coalesce bursts (a rollout touches many objects at once)
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        keys.add(item)
            except queue.Empty:
                pass
            if self._stop.is_set():
                return
            if time.monotonic() >= next_resync:
                keys |= self._all_keys()
                keys.add(("gc", "", ""))
                next_resync = time.monotonic() + self.resync_seconds
            self._process(keys)

    def _all_keys(self) -> set[tuple[str, str, str]]:
        keys: set[tuple[str, str, str]] = set()
        for plural, kind in (("deployments", "deploy"), ("replicasets", "rs"), ("services", "svc")):
            for o in self.cache.list(plural):
                keys.add((kind, o["metadata"]["namespace"], o["metadata"]["name"]))
        for p in self.cache.list("pods"):
            if not (p.get("spec") or {}).get("nodeName"):
                keys.add(("pod", p["metadata"]["namespace"], p["metadata"]["name"]))
        for extra in self.extras:
            keys.update(extra.all_keys())
        return keys

    def _process(self, keys: set[tuple[str, str, str]]) -> None:
        order = {"gc": 0, "node": 1, "pvc": 1, "pod": 2, "deploy": 3, "rs": 4, "svc": 5, "endpoints-ns": 6}
        svc_done: set[tuple[str, str]] = set()
        self.scheduler.begin_batch()
        for kind, ns, name in sorted(keys, key=lambda k: (order.get(k[0], 9), k)):
            handler: dict[str, Callable[[str, str], None]] = {
                "gc": lambda _ns, _n: self.collect_garbage(),
                "pod": self.scheduler.schedule, "deploy": self.sync_deployment, "rs": self.sync_replicaset,
                "svc": self.sync_endpoints, "default-sa": lambda ns_, _n: ensure_default_service_account(self.store, ns_),
            }
            try:
                if kind not in handler and kind != "endpoints-ns":
                    if not any(extra.handle(kind, ns, name) for extra in self.extras):
                        log.debug("controller: no handler for %s", kind)
                    continue
                if kind == "endpoints-ns":
                    for svc in self.cache.list("services", ns):
                        if (ns, svc["metadata"]["name"]) not in svc_done:
                            self.sync_endpoints(ns, svc["metadata"]["name"])
                    continue
                if kind == "svc":
                    svc_done.add((ns, name))
                handler[kind](ns, name)
            except ApiError as exc:
                # Conflicts and races with deletions resolve on the next pass.
                log.debug("controller %s %s/%s: %s", kind, ns, name, exc.message)
                if exc.code == 409:
                    self._queue.put((kind, ns, name))
            except Exception:  # a controller bug must not stop the loop
                log.exception("controller %s %s/%s failed", kind, ns, name)

    # -------------------------------------------------------------------------------- deployments
    def _owned(self, plural: str, ns: str, owner_uid: str) -> list[Obj]:
        """Objects controlled by `owner_uid`: ReplicaSets as private copies (edited below), pods shared."""
        owned = [o for o in self.cache.list(plural, ns) if controller_uid(o) == owner_uid]
        return json.loads(json.dumps(owned)) if plural == "replicasets" else owned

    def sync_deployment(self, ns: str, name: str) -> None:
        d = self.store.try_get("deployments", ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d.get("spec") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        template = spec.get("template") or {}
        h = template_hash(template)
        rss = self._owned("replicasets", ns, d["metadata"]["uid"])
        pods = self.cache.list("pods", ns)
        new_rs = next((r for r in rss if (r["metadata"].get("labels") or {}).get(HASH_LABEL) == h), None)
        olds = [r for r in rss if r is not new_rs]
        max_rev = max((int((r["metadata"].get("annotations") or {}).get(REVISION, "0") or 0) for r in rss), default=0)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") != "Recreate"
        ru = strategy.get("rollingUpdate") or {}
        max_surge = resolve_int_or_percent(ru.get("maxSurge"), desired, True) if rolling else 0
        max_unavail = resolve_int_or_percent(ru.get("maxUnavailable"), desired, False) if rolling else desired
        if rolling and max_surge == 0 and max_unavail == 0:
            max_unavail = 1
        annotations = {DESIRED: str(desired), MAX_REPLICAS: str(desired + max_surge)}

        if spec.get("paused"):
            self._write_deployment_status(d, rss, pods, new_rs, desired, max_unavail)
            return
        if new_rs is None:
            new_rs = self._create_rs(d, h, template, max_rev + 1, annotations,
                                     replicas=desired if not any(self._rs_replicas(r) for r in olds) else 0)
        else:
            rev = int((new_rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
            want_rev = rev if rev == max_rev else max_rev + 1  # rollout undo re-labels the old RS
            new_rs = self._update_rs_meta(new_rs, {**annotations, REVISION: str(want_rev)})

        counts = {r["metadata"]["uid"]: self._pod_counts(r, pods) for r in [new_rs, *olds]}
        old_active = [r for r in olds if self._rs_replicas(r) > 0]
        if not old_active:
            if self._rs_replicas(new_rs) != desired:
                new_rs = self._scale_rs(new_rs, desired)
        elif not rolling:
            for r in old_active:
                self._scale_rs(r, 0)
            if not any(counts[r["metadata"]["uid"]][0] for r in olds):
                new_rs = self._scale_rs(new_rs, desired)
        else:
            new_rs = self._roll(new_rs, olds, counts, desired, max_surge, max_unavail)
        rss = self._owned("replicasets", ns, d["metadata"]["uid"])
        pods = self.cache.list("pods", ns)
        self._write_deployment_status(d, rss, pods, new_rs, desired, max_unavail)
        self._cleanup_history(d, rss, new_rs)

    @staticmethod
    def _rs_replicas(rs: Obj) -> int:
        return int((rs.get("spec") or {}).get("replicas") or 0)

    def _pod_counts(self, rs: Obj, pods: list[Obj]) -> tuple[int, int]:
        """(active pods, available pods) of a ReplicaSet, from the pods themselves (no status lag)."""
        uid = rs["metadata"]["uid"]
        mine = [p for p in pods if controller_uid(p) == uid and is_active(p)]
        return len(mine), sum(1 for p in mine if is_ready(p))

    def _roll(self, new_rs: Obj, olds: list[Obj], counts: dict[str, tuple[int, int]], desired: int,
              max_surge: int, max_unavail: int) -> Obj:
        all_rs = [new_rs, *olds]
        total = sum(self._rs_replicas(r) for r in all_rs)
        # Scale the new ReplicaSet up within maxSurge.
        allowed = desired + max_surge
        new_replicas = self._rs_replicas(new_rs)
        if new_replicas < desired and total < allowed:
            new_replicas = min(desired, new_replicas + allowed - total)
            new_rs = self._scale_rs(new_rs, new_replicas)
            total = sum(self._rs_replicas(r) for r in all_rs if r is not new_rs) + new_replicas
        elif new_replicas > desired:
            new_rs = self._scale_rs(new_rs, desired)
            new_replicas = desired
        # Scale old ReplicaSets down within maxUnavailable.
        min_available = desired - max_unavail
        new_unavailable = new_replicas - counts[new_rs["metadata"]["uid"]][1]
        max_down = total - min_available - new_unavailable
        olds_sorted = sorted(olds, key=lambda r: r["metadata"].get("creationTimestamp", ""))
        # First the old pods that are not available anyway: removing them costs no availability.
        for r in olds_sorted:
            if max_down <= 0:
                break
            reps = self._rs_replicas(r)
            unhealthy = reps - counts[r["metadata"]["uid"]][1]
            take = min(max(unhealthy, 0), max_down, reps)
            if take > 0:
                self._scale_rs(r, reps - take)
                r["spec"]["replicas"] = reps - take
                max_down -= take
        available = sum(c[1] for c in counts.values())
        can_remove = available - min_available
        for r in olds_sorted:
            if can_remove <= 0:
                break
            reps = self._rs_replicas(r)
            take = min(reps, can_remove)
            if take > 0:
                self._scale_rs(r, reps - take)
                r["spec"]["replicas"] = reps - take
                can_remove -= take
        return new_rs

    def _create_rs(self, d: Obj, h: str, template: Obj, revision: int, annotations: dict[str, str],
                   replicas: int) -> Obj:
        ns, dname = d["metadata"]["namespace"], d["metadata"]["name"]
        tmpl = json.loads(json.dumps(template))
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = json.loads(json.dumps((d.get("spec") or {}).get("selector") or {}))
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        labels = dict(tmpl["metadata"]["labels"])
        rs = {
            "metadata": {"name": f"{dname}-{h}", "namespace": ns, "labels": labels,
                         "annotations": {**annotations, REVISION: str(revision)},
                         "ownerReferences": [owner_ref(d)]},
            "spec": {"replicas": replicas, "selector": selector, "template": tmpl,
                     "minReadySeconds": int((d.get("spec") or {}).get("minReadySeconds") or 0)},
        }
        created = self.store.create("replicasets", rs, namespace=ns)
        self.recorder.record(d, "Normal", "ScalingReplicaSet",
                             f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
                             component="deployment-controller")
        return created

    def _update_rs_meta(self, rs: Obj, annotations: dict[str, str]) -> Obj:
        cur = rs["metadata"].get("annotations") or {}
        if all(cur.get(k) == v for k, v in annotations.items()):
            return rs

        def fn(o: Obj) -> None:
            o["metadata"].setdefault("annotations", {}).update(annotations)
        return self.store.mutate("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], fn)

    def _scale_rs(self, rs: Obj, replicas: int) -> Obj:
        before = self._rs_replicas(rs)
        if before == replicas:
            return rs

        def fn(o: Obj) -> None:
            o["spec"]["replicas"] = replicas
        out = self.store.mutate("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], fn)
        owner = next((r for r in rs["metadata"].get("ownerReferences") or [] if r.get("kind") == "Deployment"), None)
        if owner:
            d = self.store.try_get("deployments", rs["metadata"]["namespace"], owner["name"])
            if d is not None:
                verb = "up" if replicas > before else "down"
                self.recorder.record(d, "Normal", "ScalingReplicaSet",
                                     f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {replicas}",
                                     component="deployment-controller")
        return out

    def _write_deployment_status(self, d: Obj, rss: list[Obj], pods: list[Obj], new_rs: Obj | None,
                                 desired: int, max_unavail: int) -> None:
        replicas = ready = 0
        for r in rss:
            active, avail = self._pod_counts(r, pods)
            replicas += active
            ready += avail
        updated = self._pod_counts(new_rs, pods)[0] if new_rs else 0
        available = ready
        old = d.get("status") or {}
        conds = {c["type"]: c for c in old.get("conditions") or []}
        now = now_iso()
        nrs = new_rs["metadata"]["name"] if new_rs else ""

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
            prev = conds.get(type_) or {}
            transition = prev.get("lastTransitionTime") if prev.get("status") == status else now
            update = prev.get("lastUpdateTime") if prev.get("reason") == reason and prev.get("status") == status else now
            return {"type": type_, "status": status, "lastUpdateTime": update or now,
                    "lastTransitionTime": transition or now, "reason": reason, "message": message}

        complete = updated == desired and replicas == updated and available >= desired
        avail_ok = available >= desired - max_unavail
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available, "unavailableReplicas": max(desired - available, 0) if replicas or desired else 0,
            "conditions": [
                cond("Available", "True" if avail_ok else "False",
                     "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
                     "Deployment has minimum availability." if avail_ok else "Deployment does not have minimum availability."),
                cond("Progressing", "True", "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                     f'ReplicaSet "{nrs}" has successfully progressed.' if complete else f'ReplicaSet "{nrs}" is progressing.'),
            ],
        }
        failure = next((c for r in rss for c in (r.get("status") or {}).get("conditions") or []
                        if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)
        if failure is not None:  # the deployment controller surfaces its ReplicaSets' failures
            status["conditions"].append(cond("ReplicaFailure", "True", "FailedCreate", failure.get("message") or ""))
        for k in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"):
            if not status[k]:
                status.pop(k)  # the real server omits zero counts
        if old.get("collisionCount") is not None:
            status["collisionCount"] = old["collisionCount"]
        if status != old:
            self.store.mutate("deployments", d["metadata"]["namespace"], d["metadata"]["name"],
                              lambda o: o.__setitem__("status", status), subresource="status")
        rev = (new_rs["metadata"].get("annotations") or {}).get(REVISION) if new_rs else None
        if rev and (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
            def fn(o: Obj) -> None:
                o["metadata"].setdefault("annotations", {})[REVISION] = rev
            self.store.mutate("deployments", d["metadata"]["namespace"], d["metadata"]["name"], fn)

    def _cleanup_history(self, d: Obj, rss: list[Obj], new_rs: Obj | None) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10) if (d.get("spec") or {}).get(
            "revisionHistoryLimit") is not None else 10)
        olds = [r for r in rss if new_rs is None or r["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        idle = [r for r in olds if self._rs_replicas(r) == 0 and not (r.get("status") or {}).get("replicas")]
        idle.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, "0") or 0))
        for r in idle[: max(len(idle) - limit, 0)]:
            self.store.delete("replicasets", r["metadata"]["namespace"], r["metadata"]["name"])

    # -------------------------------------------------------------------------------- replicasets
    def sync_replicaset(self, ns: str, name: str) -> None:
        rs = self.store.try_get("replicasets", ns, name)
        if rs is None:
            return
        spec = rs.get("spec") or {}
        desired = int(spec.get("replicas") if spec.get("replicas") is not None else 1)
        pods = self._owned("pods", ns, rs["metadata"]["uid"])
        active = [p for p in pods if is_active(p)]
        diff = desired - len(active)
        failure: str | None = None
        if diff > 0 and not rs["metadata"].get("deletionTimestamp"):
            uid = rs["metadata"]["uid"]
            next_try, delay = self._create_backoff.get(uid, (0.0, 0.0))
            if time.monotonic() < next_try:
                failure = self._replica_failure(rs)  # still refused: keep the condition until a try succeeds
            else:
                try:
                    for _ in range(diff):
                        active.append(self._create_pod(rs))
                    self._create_backoff.pop(uid, None)
                except ApiError as exc:
                    if exc.code not in (403, 422):
                        raise
                    # Admission refused the pod (quota, a missing service account): say so on the ReplicaSet
                    # and try again later, as the replicaset controller's rate-limited queue does.
                    failure = exc.message
                    self.recorder.record(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}",
                                         component="replicaset-controller")
                    delay = min(max(delay * 2, FAILED_CREATE_BACKOFF[0]), FAILED_CREATE_BACKOFF[1])
                    self._create_backoff[uid] = (time.monotonic() + delay, delay)
        elif diff < 0:
            def rank(p: Obj) -> tuple:
                st = p.get("status") or {}
                phase_rank = {"Pending": 0, "Unknown": 1}.get(st.get("phase", "Pending"), 2)
                restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
                ts = p["metadata"].get("creationTimestamp", "")
                # unscheduled < pending < not ready < ready; then more restarts; then newest first
                return (bool(p["spec"].get("nodeName")), phase_rank, is_ready(p), -restarts,
                        [-ord(ch) for ch in ts], p["metadata"]["name"])
            for p in sorted(active, key=rank)[: -diff]:
                try:
                    self.store.delete("pods", ns, p["metadata"]["name"])
                except ApiError:
                    pass
                active.remove(p)
        self._write_rs_status(rs, active, failure)

    @staticmethod
    def _replica_failure(rs: Obj) -> str | None:
        for c in (rs.get("status") or {}).get("conditions") or []:
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
                return c.get("message") or ""
        return None

    def _create_pod(self, rs: Obj) -> Obj:
        tmpl = json.loads(json.dumps((rs.get("spec") or {}).get("template") or {}))
        meta = tmpl.get("metadata") or {}
        ns = rs["metadata"]["namespace"]
        for _ in range(5):
            # generateName, as the real controller: a refused pod is `pods "web-5d4f8b7c9-" is forbidden: ...`
            pod = {"metadata": {"generateName": f"{rs['metadata']['name']}-", "namespace": ns,
                                "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
                                "ownerReferences": [owner_ref(rs)]},
                   "spec": tmpl.get("spec") or {}, "status": {"phase": "Pending", "qosClass": "BestEffort"}}
            if not pod["metadata"]["annotations"]:
                del pod["metadata"]["annotations"]
            try:
                created = self.store.create("pods", pod, namespace=ns)
                self.recorder.record(rs, "Normal", "SuccessfulCreate",
                                     f"Created pod: {created['metadata']['name']}", component="replicaset-controller")
                return created
            except ApiError as exc:
                if exc.reason != "AlreadyExists":
                    raise
        raise ApiError(409, "AlreadyExists", "could not pick a unique pod name")

    def _write_rs_status(self, rs: Obj, active: list[Obj], failure: str | None = None) -> None:
        sel = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        ready = sum(1 for p in active if is_ready(p))
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active if all(
                (p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())),
            "readyReplicas": ready, "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
            if not status[k]:
                status.pop(k)
        if failure is not None:
            prev = next((c for c in (rs.get("status") or {}).get("conditions") or []
                         if c.get("type") == "ReplicaFailure"), {})
            status["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                     "message": failure, "lastTransitionTime": prev.get("lastTransitionTime") or now_iso()}]
        if status != (rs.get("status") or {}):
            self.store.mutate("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"],
                              lambda o: o.__setitem__("status", status), subresource="status")

    # -------------------------------------------------------------------------------- endpoints
    def sync_endpoints(self, ns: str, name: str) -> None:
        svc = self.store.try_get("services", ns, name)
        if svc is None:
            return
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return  # selector-less services have hand-managed endpoints
        match = parse_label_selector(",".join(f"{k}={v}" for k, v in selector.items()))
        pods = [p for p in self.cache.list("pods", ns)
                if match(p["metadata"].get("labels") or {}) and (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")]
        # Like the endpoints controller: each pod's ports are resolved on that pod, and a pod that does not
        # have a named targetPort is left out; pods with the same ports share a subset.
        groups: dict[str, dict[str, Any]] = {}
        for p in sorted(pods, key=lambda p: p["status"]["podIP"]):
            ports = []
            for sp in (svc.get("spec") or {}).get("ports") or []:
                target = sp.get("targetPort", sp.get("port"))
                if isinstance(target, str) and not target.isdigit():
                    target = self._named_port([p], target)
                    if target is None:
                        continue
                port = {"port": int(target), "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    port["name"] = sp["name"]
                ports.append(port)
            if not ports:
                continue
            addr = {"ip": p["status"]["podIP"], "nodeName": p["spec"].get("nodeName"),
                    "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": ns,
                                  "uid": p["metadata"]["uid"]}}
            subset = groups.setdefault(json.dumps(ports, sort_keys=True), {"ports": ports})
            subset.setdefault("addresses" if is_ready(p) else "notReadyAddresses", []).append(addr)
        subsets = list(groups.values())
        labels = dict(svc["metadata"].get("labels") or {})
        cur = self.store.try_get("endpoints", ns, name)
        if cur is None:
            self.store.create("endpoints", {"metadata": {"name": name, "namespace": ns, "labels": labels},
                                            "subsets": subsets}, namespace=ns)
        elif cur.get("subsets") != subsets or (cur["metadata"].get("labels") or {}) != labels:
            cur["subsets"] = subsets
            cur["metadata"]["labels"] = labels
            self.store.replace("endpoints", cur)
        endpointslices.sync(self.store, svc, subsets)

    @staticmethod
    def _named_port(pods: list[Obj], port_name: str) -> int | None:
        for p in pods:
            for c in p["spec"].get("containers") or []:
                for cp in c.get("ports") or []:
                    if cp.get("name") == port_name:
                        return int(cp["containerPort"])
        return None

    # -------------------------------------------------------------------------------- garbage collection
    def collect_garbage(self) -> None:
        uids: set[str] = set()
        for plural in ("deployments", "replicasets"):
            uids |= {o["metadata"]["uid"] for o in self.cache.list(plural)}
        for plural in ("replicasets", "pods"):
            for o in self.cache.list(plural):
                refs = [r for r in o["metadata"].get("ownerReferences") or []
                        if r.get("kind") in ("Deployment", "ReplicaSet")]
                if refs and all(r.get("uid") not in uids for r in refs) and not o["metadata"].get("deletionTimestamp"):
                    try:
                        self.store.delete(plural, o["metadata"]["namespace"], o["metadata"]["name"])
                    except ApiError:
                        pass
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in self.cache.list("services")}
        endpointslices.collect(self.store, self.cache, services)
        for ep in self.cache.list("endpoints"):
            key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if key not in services:
                try:
                    self.store.delete("endpoints", *key)
                except ApiError:
                    pass
