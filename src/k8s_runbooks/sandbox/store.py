"""In-memory object store of the sandbox API: resourceVersions, optimistic concurrency, watch history.

Objects are plain dicts in the JSON shape the official client's models serialise to. Every committed
change appends a watch event; watchers and controllers read the history from a resourceVersion.
"""

from __future__ import annotations

import copy
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.resources import RESOURCES, Resource
from k8s_runbooks.sandbox.selectors import parse_field_selector, parse_label_selector

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand: what generateName suffixes are made of

Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AdmissionPlugin(Protocol):
    """Admission control on create, in the API server's order: `mutate` before the name is generated (a
    `generateName` object is still `pods "web-abc12-"`), `validate` under the store lock after it (so checks
    like quota are atomic with the write), `created` after the commit (still under the lock)."""

    def mutate(self, store: "Store", plural: str, obj: Obj) -> None: ...

    def validate(self, store: "Store", plural: str, obj: Obj) -> None: ...

    def created(self, store: "Store", plural: str, obj: Obj) -> None: ...


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj


class Store:
    """Thread-safe store. All reads return deep copies, so callers may mutate what they get."""

    def __init__(self, history: int = 20000, *, admission: bool = True) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rv = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in RESOURCES}
        self._history: deque[WatchEvent] = deque(maxlen=history)
        self._listeners: list[Callable[[WatchEvent], None]] = []
        self._admission: list[AdmissionPlugin] = []
        self._closed = False
        if admission:
            from k8s_runbooks.sandbox.admission import install  # lazy: admission reads the store

            install(self)

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def resource(plural: str) -> Resource:
        try:
            return RESOURCES[plural]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})") from None

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def _key(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "") if res.namespaced else "", name)

    def _commit(self, res: Resource, type_: str, obj: Obj) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if type_ == "DELETED":
            self._objects[res.plural].pop(key, None)
        else:
            self._objects[res.plural][key] = obj
        event = WatchEvent(self._rv, res.plural, type_, copy.deepcopy(obj))
        self._history.append(event)
        self._changed.notify_all()
        for listener in list(self._listeners):
            listener(event)
        return copy.deepcopy(obj)

    def _validate_meta(self, res: Resource, obj: Obj) -> None:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + "".join(random.choice(_NAME_ALPHABET) for _ in range(5))
            meta["name"] = name
        if not name:
            raise ApiError.invalid(res.kind, "", [("metadata.name", "Required value: name or generateName is required")])
        pattern = _DNS1123_LABEL if res.plural in ("namespaces", "services") else _DNS1123_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name):
            raise ApiError.invalid(
                res.kind, name,
                [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 name must consist of lower case '
                  "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")],
            )
        for field_name in ("labels", "annotations"):
            value = meta.get(field_name)
            if value is not None and (not isinstance(value, dict)
                                      or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
                raise ApiError.invalid(res.kind, name, [(f"metadata.{field_name}", "Invalid value: must be a map of strings")])

    # ----------------------------------------------------------------------------- listeners
    def add_listener(self, fn: Callable[[WatchEvent], None]) -> None:
        """Called synchronously under the store lock after each commit: keep it to a queue put."""
        with self._lock:
            self._listeners.append(fn)

    def add_admission(self, plugin: AdmissionPlugin) -> None:
        with self._lock:
            self._admission.append(plugin)

    # ----------------------------------------------------------------------------- CRUD
    def create(self, plural: str, obj: Obj, namespace: str | None = None) -> Obj:
        res = self.resource(plural)
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        if res.namespaced:
            obj.setdefault("metadata", {}).setdefault("namespace", namespace or "default")
        for plugin in self._admission:
            plugin.mutate(self, plural, obj)
        self._validate_meta(res, obj)
        meta = obj["metadata"]
        with self._lock:
            if res.namespaced:
                ns = namespace or meta.get("namespace") or "default"
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise ApiError.bad_request("the namespace of the provided object does not match the namespace sent on the request")
                meta["namespace"] = ns
                if (("", ns)) not in self._objects["namespaces"]:
                    raise ApiError.not_found("namespaces", ns)
            else:
                meta.pop("namespace", None)
            key = self._key(res, meta.get("namespace"), meta["name"])
            if key in self._objects[plural]:
                raise ApiError.already_exists(plural, meta["name"], res.group)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            meta.pop("resourceVersion", None)
            if plural == "namespaces":
                obj.setdefault("status", {})["phase"] = "Active"
            for plugin in self._admission:
                plugin.validate(self, plural, obj)
            created = self._commit(res, "ADDED", obj)
            for plugin in self._admission:
                plugin.created(self, plural, created)
            return created

    def get(self, plural: str, namespace: str | None, name: str) -> Obj:
        res = self.resource(plural)
        with self._lock:
            obj = self._objects[plural].get(self._key(res, namespace, name))
            if obj is None:
                raise ApiError.not_found(plural, name, res.group)
            return copy.deepcopy(obj)

    def try_get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(plural, namespace, name)
        except ApiError:
            return None

    def list(self, plural: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[Obj], int]:
        """Items sorted by (namespace, name) — the order a real server's list returns — and the list RV."""
        items, rv, _ = self.list_page(plural, namespace, label_selector, field_selector)
        return items, rv

    def list_page(self, plural: str, namespace: str | None = None, label_selector: str | None = None,
                  field_selector: str | None = None, offset: int = 0, limit: int = 0) -> tuple[list[Obj], int, int]:
        """Copies of the matching items [offset, offset + limit) (limit 0: to the end), the list RV and how many
        match in all. Only the page is copied: a paged list of N objects copies N objects, not N per page."""
        res = self.resource(plural)
        match_labels = parse_label_selector(label_selector)
        match_fields = parse_field_selector(field_selector, plural)
        with self._lock:
            matching = [
                o for (ns, _), o in sorted(self._objects[plural].items())
                if (not namespace or not res.namespaced or ns == namespace)
                and match_labels(o["metadata"].get("labels") or {}) and match_fields(o)
            ]
            page = matching[offset:offset + limit] if limit > 0 else matching[offset:]
            return [copy.deepcopy(o) for o in page], self._rv, len(matching)

    def replace(self, plural: str, obj: Obj, *, subresource: str | None = None) -> Obj:
        """PUT semantics. A resourceVersion in the object must match (409 Conflict otherwise).

        `subresource="status"` changes only `.status`; otherwise `.status` of the stored object is kept
        (for the kinds that have a status subresource) and `generation` moves when `.spec` changes.
        """
        res = self.resource(plural)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        with self._lock:
            cur = self._objects[plural].get(self._key(res, meta.get("namespace"), name))
            if cur is None:
                raise ApiError.not_found(plural, name, res.group)
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != cur["metadata"]["resourceVersion"]:
                raise ApiError.conflict(plural, name, res.group)
            new = copy.deepcopy(cur)
            if subresource == "status":
                new["status"] = obj.get("status", {})
            else:
                self._validate_meta(res, obj)
                for k, v in obj.items():
                    if k in ("metadata", "status") and "status" in res.subresources:
                        continue
                    if k != "metadata":
                        new[k] = v
                for k in ("labels", "annotations", "ownerReferences", "finalizers"):
                    if k in meta:
                        new["metadata"][k] = meta[k]
                    else:
                        new["metadata"].pop(k, None)
                if "status" not in res.subresources and "status" in obj:
                    new["status"] = obj["status"]
                if new.get("spec") != cur.get("spec"):
                    new["metadata"]["generation"] = int(cur["metadata"].get("generation", 1)) + 1
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            if new == cur:
                return copy.deepcopy(cur)  # no-op writes do not bump the resourceVersion, as on a real server
            return self._commit(res, "MODIFIED", new)

    def mutate(self, plural: str, namespace: str | None, name: str, fn: Callable[[Obj], None], *,
               subresource: str | None = None) -> Obj:
        """Atomic read-modify-write for controllers and the kubelet: `fn` edits a copy in place."""
        with self._lock:
            cur = self.get(plural, namespace, name)
            cur["metadata"].pop("resourceVersion", None)
            fn(cur)
            return self.replace(plural, cur, subresource=subresource)

    def delete(self, plural: str, namespace: str | None, name: str, *, grace_seconds: int | None = None) -> Obj:
        """Delete an object. Pods with a grace period are only marked (deletionTimestamp); the kubelet
        stops the process and then calls `finalize_delete`."""
        res = self.resource(plural)
        with self._lock:
            cur = self._objects[plural].get(self._key(res, namespace, name))
            if cur is None:
                raise ApiError.not_found(plural, name, res.group)
            if plural == "pods":
                grace = grace_seconds if grace_seconds is not None else int(
                    (cur.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
                if grace > 0:
                    if cur["metadata"].get("deletionTimestamp"):
                        return copy.deepcopy(cur)
                    new = copy.deepcopy(cur)
                    new["metadata"]["deletionTimestamp"] = now_iso()
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                    return self._commit(res, "MODIFIED", new)
            if plural == "namespaces":
                for other, r in RESOURCES.items():
                    if r.namespaced:
                        for key in [k for k in self._objects[other] if k[0] == name]:
                            self._commit(r, "DELETED", copy.deepcopy(self._objects[other][key]))
            return self._commit(res, "DELETED", copy.deepcopy(cur))

    def finalize_delete(self, plural: str, namespace: str | None, name: str) -> None:
        res = self.resource(plural)
        with self._lock:
            cur = self._objects[plural].get(self._key(res, namespace, name))
            if cur is not None:
                self._commit(res, "DELETED", copy.deepcopy(cur))

    # ----------------------------------------------------------------------------- watch
    def watch(self, plural: str, namespace: str | None = None, resource_version: int | None = None, *,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout: float = 300.0, bookmark_every: float | None = None,
              stop: threading.Event | None = None) -> Iterator[WatchEvent | None]:
        """Yield events after `resource_version` (or from now). Yields None as a heartbeat (for bookmarks
        and for noticing a closed client) at least every second. Raises 410 Gone if the RV is too old."""
        res = self.resource(plural)
        match_labels = parse_label_selector(label_selector)
        match_fields = parse_field_selector(field_selector, plural)
        deadline = time.monotonic() + timeout
        with self._lock:
            cursor = self._rv if resource_version is None else resource_version
            if self._history and cursor < self._history[0].resource_version - 1:
                raise ApiError.gone(f"too old resource version: {cursor} ({self._history[0].resource_version - 1})")
        while time.monotonic() < deadline and not self._closed and not (stop and stop.is_set()):
            with self._lock:
                pending = self._events_after(cursor)
                if not pending:
                    self._changed.wait(timeout=1.0)
                    pending = self._events_after(cursor)
                if pending:
                    cursor = pending[-1].resource_version
            for e in pending:
                if e.resource != plural:
                    continue
                meta = e.object["metadata"]
                if namespace and res.namespaced and meta.get("namespace") != namespace:
                    continue
                if not (match_labels(meta.get("labels") or {}) and match_fields(e.object)):
                    continue
                yield e
            if not pending:
                yield None

    def _events_after(self, cursor: int) -> list[WatchEvent]:
        """History is ordered by resourceVersion: walk back from the newest (O(new events), not O(history))."""
        newer: list[WatchEvent] = []
        for e in reversed(self._history):
            if e.resource_version <= cursor:
                break
            newer.append(e)
        newer.reverse()
        return newer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
