"""coordination.k8s.io/v1 Leases as plain dicts, through the one client seam (timeouts, error mapping).

Writes carry the resourceVersion they were computed from, so a concurrent writer makes the API answer
409 Conflict (`Conflict` here) instead of one write silently overwriting the other; a create of a Lease that
appeared meanwhile answers 409 AlreadyExists (also `Conflict`). Callers re-read and decide again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.exceptions import ApiException

from k8s_runbooks.errors import NotFound, TransientError
from k8s_runbooks.kube.client import Kube, Op

Obj = dict[str, Any]
RESOURCE = "leases"


class Conflict(TransientError):
    """The Lease changed (or appeared) since it was read: read it again and decide again."""


def micro_time(at: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return (at or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _json(resp: Any) -> Obj:
    data = json.loads(resp.data or b"{}")
    return data if isinstance(data, dict) else {}


def _call(kube: Kube, op: Op, fn: Any, *args: Any, **kwargs: Any) -> Obj:
    try:
        return _json(kube.call(op, fn, *args, _preload_content=False, **kwargs))
    except TransientError as err:
        cause = err.__cause__
        if isinstance(cause, ApiException) and cause.status == 409:
            raise Conflict(err.message, hint="re-read the Lease and decide again") from cause
        raise


def read(kube: Kube, namespace: str, name: str) -> Obj | None:
    """The Lease, or None when there is none."""
    try:
        return _call(kube, Op("get", RESOURCE, namespace, name), kube.coordination.read_namespaced_lease, name, namespace)
    except NotFound:
        return None


def create(kube: Kube, namespace: str, body: Obj) -> Obj:
    """Create; `Conflict` when a Lease of that name was created first by someone else."""
    name = body["metadata"]["name"]
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **body}
    return _call(kube, Op("create", RESOURCE, namespace, name), kube.coordination.create_namespaced_lease, namespace, body)


def replace(kube: Kube, lease: Obj) -> Obj:
    """Replace `lease` (which carries the resourceVersion it was read at); `Conflict` if it changed since."""
    meta = lease["metadata"]
    if not meta.get("resourceVersion"):
        raise ValueError("a Lease replace needs the resourceVersion it was read at")
    return _call(kube, Op("update", RESOURCE, meta["namespace"], meta["name"]),
                 kube.coordination.replace_namespaced_lease, meta["name"], meta["namespace"], lease)


def write(kube: Kube, namespace: str, current: Obj | None, new: Obj) -> Obj:
    """Create `new` when `current` is None, else replace `current` by `new` at `current`'s resourceVersion."""
    if current is None:
        return create(kube, namespace, new)
    new = {**new, "metadata": {**new.get("metadata", {}), "name": current["metadata"]["name"], "namespace": namespace,
                               "resourceVersion": current["metadata"]["resourceVersion"]}}
    return replace(kube, new)

