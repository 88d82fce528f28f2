"""Events of an object and of its owners (Pod -> ReplicaSet -> Deployment), time-ordered."""

from __future__ import annotations

from datetime import datetime, timezone

from kubernetes import client as k8s

from k8s_runbooks.kube.client import Kube, Op, get_kube
from k8s_runbooks.kube.pods import owner_chain
from k8s_runbooks.models import KubeEvent
from k8s_runbooks.redact import redact
from k8s_runbooks.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_READERS = {"Pod": "read_namespaced_pod", "ReplicaSet": "read_namespaced_replica_set", "Deployment": "read_namespaced_deployment"}


def _as_event(ev: k8s.CoreV1Event, namespace: str) -> KubeEvent:
    first = ev.first_timestamp or ev.event_time or (ev.metadata.creation_timestamp if ev.metadata else None)
    last = ev.last_timestamp or ev.event_time or first
    if ev.series is not None and ev.series.last_observed_time is not None:
        last = ev.series.last_observed_time
    message, _ = redact(ev.message or "")  # event messages can quote env values or command lines
    obj = ev.involved_object
    return KubeEvent(
        namespace=namespace,
        involved_kind=obj.kind or "",
        involved_name=obj.name or "",
        type=ev.type or "Normal",
        reason=ev.reason or "",
        message=message,
        count=ev.count or (ev.series.count if ev.series else None) or 1,
        first_seen=first,
        last_seen=last,
    )


def events_for(kube: Kube, namespace: str, kind: str, name: str) -> list[KubeEvent]:
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"
    events = kube.call(
        Op("list", "events", namespace), kube.core.list_namespaced_event, namespace, field_selector=selector
    )
    return [_as_event(ev, namespace) for ev in events.items]


def object_events(
    namespace: str, kind: str, name: str, include_owners: bool = True, *, settings: Settings | None = None
) -> list[KubeEvent]:
    """Events of `kind/name` and (optionally) of its owner chain, oldest first."""
    kube = get_kube(settings)
    targets = [(kind, name)]
    if include_owners and kind in ("Pod", "ReplicaSet"):
        reader = getattr(kube.core if kind == "Pod" else kube.apps, _READERS[kind])
        obj = kube.call(Op("get", f"{kind.lower()}s", namespace, name), reader, name, namespace)
        for link in owner_chain(kube, namespace, obj.metadata):
            owner_kind, _, owner_name = link.partition("/")
            targets.append((owner_kind, owner_name))
    collected: list[KubeEvent] = []
    for k, n in targets:
        collected.extend(events_for(kube, namespace, k, n))
    return sorted(collected, key=lambda e: (e.last_seen or e.first_seen or _EPOCH, e.first_seen or _EPOCH))
