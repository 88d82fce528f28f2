"""Deterministic Prometheus history for the metric tests, as OpenMetrics text for `promtool tsdb
create-blocks-from openmetrics`.

Cluster story (one hour, a sample every 15 s, ending at `end`):
- shop/checkout (3 pods, healthy, SLOW: p95 ~0.5 s, 10 % 5xx), shop/payments (2 pods, healthy, fast),
- shop/checkout-v2 (a canary whose one pod crash-loops: restarts every 2 min, CrashLoopBackOff,
  OOMKilled, 50 % CPU throttled, working set 200Mi of a 256Mi limit) — its pods share the `checkout-`
  prefix, so a pod-name regex would wrongly blame `checkout`,
- staging/checkout (same names as shop/checkout, crash-looping) — only a namespace filter keeps it out.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_S = 15
SPAN_S = 3600
MIB = 1024 * 1024


@dataclass(frozen=True)
class Deploy:
    namespace: str
    name: str
    rs_hash: str
    pods: tuple[str, ...]
    desired: int
    available: int
    crashing: bool


DEPLOYMENTS = (
    Deploy("shop", "checkout", "6d5f8c7b9", ("checkout-6d5f8c7b9-abcde", "checkout-6d5f8c7b9-fghij", "checkout-6d5f8c7b9-klmno"), 3, 3, False),
    Deploy("shop", "payments", "7c8d9f6b5", ("payments-7c8d9f6b5-pqrst", "payments-7c8d9f6b5-uvwxy"), 2, 2, False),
    Deploy("shop", "checkout-v2", "5b6c7d8f9", ("checkout-v2-5b6c7d8f9-zzzzz",), 1, 0, True),
    Deploy("staging", "checkout", "6d5f8c7b9", ("checkout-6d5f8c7b9-abcde",), 1, 0, True),
)

# service -> (cumulative requests per 15 s step for each `le`, 5xx per step); 100 requests per step.
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
SERVICES = {
    "checkout": ((0, 2, 5, 95, 100, 100), 10),  # p95 = 0.5 s
    "payments": ((97, 100, 100, 100, 100, 100), 0),  # p95 ~ 0.049 s
}


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def openmetrics(end: int) -> str:
    """All series from `end - SPAN_S` to `end` (unix seconds), grouped by metric family."""
    times = list(range(end - SPAN_S, end + 1, STEP_S))
    families: dict[str, tuple[str, list[tuple[str, object]]]] = {}

    def add(family: str, kind: str, sample_name: str, labels: str, value_at) -> None:  # noqa: ANN001
        families.setdefault(family, (kind, []))[1].append((sample_name + labels, value_at))

    for d in DEPLOYMENTS:
        rs = f"{d.name}-{d.rs_hash}"
        ns = d.namespace
        add("kube_replicaset_owner", "gauge", "kube_replicaset_owner",
            _labels(namespace=ns, replicaset=rs, owner_kind="Deployment", owner_name=d.name), lambda i: 1)
        add("kube_deployment_status_replicas_available", "gauge", "kube_deployment_status_replicas_available",
            _labels(namespace=ns, deployment=d.name), lambda i, v=d.available: v)
        add("kube_deployment_spec_replicas", "gauge", "kube_deployment_spec_replicas",
            _labels(namespace=ns, deployment=d.name), lambda i, v=d.desired: v)
        for pod in d.pods:
            c = dict(namespace=ns, pod=pod, container="shop")
            add("kube_pod_owner", "gauge", "kube_pod_owner",
                _labels(namespace=ns, pod=pod, owner_kind="ReplicaSet", owner_name=rs, owner_is_controller="true"),
                lambda i: 1)
            # Healthy pods carry 2 old restarts (increase 0); crashing ones restart every 2 minutes.
            add("kube_pod_container_status_restarts", "counter", "kube_pod_container_status_restarts_total",
                _labels(**c), (lambda i: 2 + (i * STEP_S) // 120) if d.crashing else (lambda i: 2))
            add("container_cpu_cfs_periods", "counter", "container_cpu_cfs_periods_total", _labels(**c),
                lambda i: i * 150)
            add("container_cpu_cfs_throttled_periods", "counter", "container_cpu_cfs_throttled_periods_total",
                _labels(**c), (lambda i: i * 75) if d.crashing else (lambda i: 0))
            add("container_cpu_usage_seconds", "counter", "container_cpu_usage_seconds_total", _labels(**c),
                (lambda i: i * 7.5) if d.crashing else (lambda i: i * 1.5))
            add("container_memory_working_set_bytes", "gauge", "container_memory_working_set_bytes", _labels(**c),
                (lambda i: 200 * MIB) if d.crashing else (lambda i: 64 * MIB))
            add("kube_pod_container_resource_limits", "gauge", "kube_pod_container_resource_limits",
                _labels(**c, resource="memory", unit="byte"), lambda i: 256 * MIB)
            if d.crashing:
                add("kube_pod_container_status_waiting_reason", "gauge", "kube_pod_container_status_waiting_reason",
                    _labels(**c, reason="CrashLoopBackOff"), lambda i: 1)
                add("kube_pod_container_status_last_terminated_reason", "gauge",
                    "kube_pod_container_status_last_terminated_reason", _labels(**c, reason="OOMKilled"), lambda i: 1)

    for service, (cumulative, errors) in SERVICES.items():
        base = dict(namespace="shop", service=service)
        for le, per_step in zip(BUCKETS, cumulative):
            add("http_request_duration_seconds", "histogram", "http_request_duration_seconds_bucket",
                _labels(**base, le=le), lambda i, n=per_step: i * n)
        add("http_requests", "counter", "http_requests_total", _labels(**base, code="200"),
            lambda i, n=100 - errors: i * n)
        add("http_requests", "counter", "http_requests_total", _labels(**base, code="500"),
            lambda i, n=errors: i * n)

    out: list[str] = []
    for family, (kind, samples) in families.items():
        out.append(f"# TYPE {family} {kind}")
        for name_labels, value_at in samples:
            out.extend(f"{name_labels} {value_at(i)} {t}" for i, t in enumerate(times))
    out.append("# EOF")
    return "\n".join(out) + "\n"
