"""One incident per workload: the incident key of a routed alert and the alert table of an incident (pure code).

The key is the workload the route resolves to: `namespace/name` from the route's rendered parameters, where the
name is the `deployment` parameter, else `service` (the runbooks' own default: a Service's Deployment has its
name), prefixed with `kube_context` when the route sets one (one namespace/name per cluster). Every alert whose
route resolves to the same workload is one incident, whatever its alertname or fingerprint: a crash alert per
container and a latency alert of `shop/checkout` all join the run the first of them opened. A route whose
parameters name no workload keeps one incident per alert (`alert:<source|fingerprint|startsAt>`).

The dispatcher publishes the incident's alerts on its run as one table artifact (`ALERTS_ARTIFACT_KEY`), rewritten
from the spool on every join or resolution; `alert_entry` is one row of it, labels redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from k8s_runbooks.redact import redact

ALERTS_ARTIFACT_KEY = "incident-alerts"
Role = Literal["opened", "joined"]
# Where a workload can sit in a route's parameters: at the top, or one mapping down (`params: {...}`, the runbooks'
# typed parameter model), searched in that order.
_MAX_DEPTH = 2


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _workload(params: Mapping[str, Any]) -> str | None:
    namespace = _text(params.get("namespace"))
    name = _text(params.get("deployment")) or _text(params.get("service"))
    if not namespace or not name:
        return None
    context = _text(params.get("kube_context"))
    return f"{context}:{namespace}/{name}" if context else f"{namespace}/{name}"


def workload_key(parameters: Mapping[str, Any] | None) -> str | None:
    """`[context:]namespace/name` of the workload the parameters name, or None when they name none."""
    level: list[Mapping[str, Any]] = [parameters] if isinstance(parameters, Mapping) else []
    for _ in range(_MAX_DEPTH):
        for params in level:
            found = _workload(params)
            if found:
                return found
        level = [v for params in level for v in params.values() if isinstance(v, Mapping)]
    return None


def incident_key(parameters: Mapping[str, Any] | None, dedup_key: str) -> str:
    """The incident an alert belongs to: its workload, or the alert alone when its route names no workload."""
    return workload_key(parameters) or f"alert:{dedup_key}"


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def redacted_labels(labels: Mapping[str, str]) -> str:
    """`k=v, ...` sorted, each pair redacted (a label may quote a secret; the table is shown to everyone with access
    to the Prefect UI)."""
    return ", ".join(redact(f"{k}={v}")[0] for k, v in sorted(labels.items()))


def alert_entry(*, role: Role, alertname: str, source: str, fingerprint: str, starts_at: str,
                labels: Mapping[str, str], received_at: float, joined_at: float | None,
                resolved_at: float | None) -> dict[str, str]:
    """One row of an incident's alert table (every value a string: Prefect renders table cells as text)."""
    return {
        "role": role,
        "alertname": redact(alertname)[0],
        "source": source,
        "status": "resolved" if resolved_at is not None else "firing",
        "starts_at": starts_at,
        "received_at": _iso(received_at),
        "joined_at": _iso(joined_at),
        "resolved_at": _iso(resolved_at),
        "fingerprint": redact(fingerprint)[0],
        "labels": redacted_labels(labels),
    }


def describe(entries: list[dict[str, str]]) -> str:
    """The artifact's description: how many alerts, how many joined, how many still fire."""
    joined = sum(1 for e in entries if e.get("role") == "joined")
    firing = sum(1 for e in entries if e.get("status") == "firing")
    return (f"Alerts of this incident: {len(entries)} ({joined} joined the run instead of starting their own), "
            f"{firing} still firing. The run is cancelled while it waits only once every one of them resolved.")
