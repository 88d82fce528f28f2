"""PromQL builders for the runbook queries, using kube-prometheus / kube-state-metrics / cAdvisor names.

Every value that reaches a query goes through `validate_*` (Kubernetes name rules, durations, label
names) and `quote()` (PromQL string escaping), so a payload such as `x"} or up{a="` can never change a
query's meaning: it is either refused with `InvalidInput` or matched literally (and then finds nothing).
Never use user input in a regex matcher (`=~`): no builder here does.

Selecting a Deployment's pods: we join through ownership instead of matching pod names with a regex.

    kube_pod_owner{owner_kind="ReplicaSet"}  (pod -> ReplicaSet)
      * on (namespace, replicaset) kube_replicaset_owner{owner_kind="Deployment", owner_name=<deployment>}

A name regex such as `checkout-.*` also matches the pods of `checkout-v2` or of a bare ReplicaSet named
`checkout-abc`; the ownership join cannot. It needs kube-state-metrics' `kube_pod_owner` and
`kube_replicaset_owner` series (both are in kube-state-metrics' default set).
"""

from __future__ import annotations

import math
import re

from k8s_runbooks.errors import InvalidInput

# Kubernetes naming rules (apimachinery validation).
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# [0-9], not \d: \d also matches other scripts' digits ("٥m"), which Python's int() reads but PromQL does
# not, so such a window passed validation and broke the query. At most 9 digits: Prometheus refuses
# durations that overflow.
_DURATION = re.compile(r"^([0-9]{1,9})(ms|s|m|h|d)$")

POD_OWNER_METRIC = "kube_pod_owner"
RS_OWNER_METRIC = "kube_replicaset_owner"


# ------------------------------------------------------------------------------------ validation
def validate_namespace(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise InvalidInput(
            f"invalid namespace {value!r}",
            hint="a namespace is a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters",
        )
    return value


def validate_name(value: str, what: str = "name") -> str:
    """Object names (Deployment, Pod, Service, ...): DNS-1123 subdomain, at most 253 characters."""
    if not isinstance(value, str) or len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}",
            hint="Kubernetes names use lower-case letters, digits, '-' and '.', at most 253 characters",
        )
    return value


def validate_label_name(value: str) -> str:
    if not isinstance(value, str) or not _LABEL_NAME.fullmatch(value):
        raise InvalidInput(f"invalid Prometheus label name {value!r}", hint="use [a-zA-Z_][a-zA-Z0-9_]*")
    return value


def validate_metric_name(value: str) -> str:
    if not isinstance(value, str) or not _METRIC_NAME.fullmatch(value):
        raise InvalidInput(f"invalid Prometheus metric name {value!r}", hint="use [a-zA-Z_:][a-zA-Z0-9_:]*")
    return value


def validate_duration(value: str) -> str:
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(
            f"invalid duration {value!r}", hint="use a positive number followed by ms, s, m, h or d, e.g. '5m'"
        )
    return value


def duration_seconds(value: str) -> float:
    match = _DURATION.fullmatch(validate_duration(value))
    assert match is not None
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * factor


def validate_quantile(q: float) -> float:
    if not isinstance(q, (int, float)) or isinstance(q, bool) or math.isnan(q) or not 0 <= q <= 1:
        raise InvalidInput(f"invalid quantile {q!r}", hint="a quantile is a number between 0 and 1, e.g. 0.95")
    return float(q)


# ------------------------------------------------------------------------------------ escaping
def quote(value: str) -> str:
    """A PromQL double-quoted string literal that matches `value` exactly.

    PromQL unquotes with Go's `strconv.Unquote`, so backslash, double quote and control characters are
    escaped; a raw newline would end the string (a parse error), so it becomes `\\n`.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"label value must be a string, got {type(value).__name__}")
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def selector(metric: str, matchers: dict[str, str] | None = None, *, not_equal: dict[str, str] | None = None) -> str:
    """`metric{a="x",b!="y"}` with validated names and escaped values (equality matchers only)."""
    validate_metric_name(metric)
    parts = [f"{validate_label_name(k)}={quote(v)}" for k, v in (matchers or {}).items()]
    parts += [f"{validate_label_name(k)}!={quote(v)}" for k, v in (not_equal or {}).items()]
    return f"{metric}{{{','.join(parts)}}}"


# ------------------------------------------------------------------------------------ building blocks
def deployment_pods(namespace: str, deployment: str) -> str:
    """One series per pod of the Deployment, labels (namespace, pod), value 1 (see the module docstring)."""
    ns = validate_namespace(namespace)
    deploy = validate_name(deployment, "deployment")
    pod_owner = selector(POD_OWNER_METRIC, {"namespace": ns, "owner_kind": "ReplicaSet"})
    rs_owner = selector(RS_OWNER_METRIC, {"namespace": ns, "owner_kind": "Deployment", "owner_name": deploy})
    return (
        "max by (namespace, pod) ("
        f'label_replace({pod_owner}, "replicaset", "$1", "owner_name", "(.*)")'
        f" * on (namespace, replicaset) group_left() {rs_owner})"
    )


def _of_deployment(expr: str, namespace: str, deployment: str) -> str:
    """Keep only the series of `expr` (which has namespace and pod labels) that belong to the Deployment."""
    return f"({expr}) * on (namespace, pod) group_left() ({deployment_pods(namespace, deployment)})"


# ------------------------------------------------------------------------------------ runbook queries
def restart_increase(namespace: str, deployment: str, window: str = "5m") -> str:
    """Container restarts per pod of the Deployment over `window` (labels: namespace, pod)."""
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    restarts = f"increase({selector('kube_pod_container_status_restarts_total', {'namespace': ns})}[{w}])"
    return f"sum by (namespace, pod) ({_of_deployment(restarts, ns, deployment)})"


def ready_replicas(namespace: str, deployment: str) -> str:
    return selector(
        "kube_deployment_status_replicas_available",
        {"namespace": validate_namespace(namespace), "deployment": validate_name(deployment, "deployment")},
    )


def desired_replicas(namespace: str, deployment: str) -> str:
    return selector(
        "kube_deployment_spec_replicas",
        {"namespace": validate_namespace(namespace), "deployment": validate_name(deployment, "deployment")},
    )


def crashloop_containers(namespace: str, deployment: str) -> str:
    """Number of the Deployment's containers now waiting in CrashLoopBackOff (no data = none reported)."""
    ns = validate_namespace(namespace)
    waiting = selector("kube_pod_container_status_waiting_reason", {"namespace": ns, "reason": "CrashLoopBackOff"})
    return f"sum({_of_deployment(waiting, ns, deployment)})"


def last_terminated_reason(namespace: str, deployment: str) -> str:
    """Series per container whose last termination had a reason (label `reason`: OOMKilled, Error, ...)."""
    ns = validate_namespace(namespace)
    reason = selector("kube_pod_container_status_last_terminated_reason", {"namespace": ns})
    return f"({_of_deployment(reason, ns, deployment)}) > 0"


def crash_looping(namespace: str, deployment: str, window: str = "5m") -> str:
    """The PodCrashLooping condition for one Deployment: number of its pods that were in CrashLoopBackOff
    or restarted within `window`.

    Anchored on the Deployment's pods, so it is 0 (not "no data") when healthy, and "no data" only when
    Prometheus knows no pod of that Deployment.
    """
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    waiting = selector("kube_pod_container_status_waiting_reason", {"namespace": ns, "reason": "CrashLoopBackOff"})
    restarts = selector("kube_pod_container_status_restarts_total", {"namespace": ns})
    crashing = (
        f"max by (namespace, pod) ((max_over_time({waiting}[{w}]) >= 1) or (increase({restarts}[{w}]) > 0))"
    )
    pods = deployment_pods(ns, deployment)
    return f"(count({pods}) * 0) + (count({crashing} * on (namespace, pod) group_left() ({pods})) or vector(0))"


def _service_matchers(namespace: str, service: str, service_label: str) -> dict[str, str]:
    return {
        "namespace": validate_namespace(namespace),
        validate_label_name(service_label): validate_name(service, "service"),
    }


def latency_quantile(
    namespace: str,
    service: str,
    quantile: float = 0.95,
    window: str = "5m",
    *,
    service_label: str = "service",
    metric: str = "http_request_duration_seconds",
    by: str = "",
) -> str:
    """pN request latency of a service from its histogram (`service_label` is `service` or `app`);
    `by` keeps one series per value of that label (e.g. `pod`)."""
    q = validate_quantile(quantile)
    w = validate_duration(window)
    buckets = selector(f"{validate_metric_name(metric)}_bucket", _service_matchers(namespace, service, service_label))
    group = "le, " + validate_label_name(by) if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({buckets}[{w}])))"


def latency_quantile_by_pod(namespace: str, service: str, quantile: float = 0.95, window: str = "5m", *, service_label: str = "service") -> str:
    """pN request latency per pod of a service (label `pod`), to find the outlier pods."""
    return latency_quantile(namespace, service, quantile, window, service_label=service_label, by="pod")


def error_ratio(
    namespace: str,
    service: str,
    window: str = "5m",
    *,
    service_label: str = "service",
    status_label: str = "code",
    metric: str = "http_requests_total",
) -> str:
    """Share of 5xx responses (0..1). NaN/no data when the service had no traffic."""
    w = validate_duration(window)
    matchers = _service_matchers(namespace, service, service_label)
    total = selector(validate_metric_name(metric), matchers)
    # A fixed regex, never user input.
    errors = total[:-1] + f',{validate_label_name(status_label)}=~"5.."}}'
    return f"sum(rate({errors}[{w}])) / sum(rate({total}[{w}]))"


def cpu_usage(namespace: str, deployment: str, window: str = "5m") -> str:
    """CPU cores used per pod (cAdvisor)."""
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    usage = f"rate({selector('container_cpu_usage_seconds_total', {'namespace': ns}, not_equal={'container': ''})}[{w}])"
    return f"sum by (namespace, pod) ({_of_deployment(usage, ns, deployment)})"


def cpu_throttling_ratio(namespace: str, deployment: str, window: str = "5m") -> str:
    """Share of CFS periods in which the pod was throttled (0..1)."""
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    throttled = f"increase({selector('container_cpu_cfs_throttled_periods_total', {'namespace': ns})}[{w}])"
    periods = f"increase({selector('container_cpu_cfs_periods_total', {'namespace': ns})}[{w}])"
    return (
        f"sum by (namespace, pod) ({_of_deployment(throttled, ns, deployment)})"
        f" / sum by (namespace, pod) ({_of_deployment(periods, ns, deployment)})"
    )


def memory_working_set_ratio(namespace: str, deployment: str) -> str:
    """Working set / memory limit per container (1.0 = at the limit; no data for containers without a limit)."""
    ns = validate_namespace(namespace)
    working = selector("container_memory_working_set_bytes", {"namespace": ns}, not_equal={"container": ""})
    limit = selector("kube_pod_container_resource_limits", {"namespace": ns, "resource": "memory"})
    return (
        f"sum by (namespace, pod, container) ({_of_deployment(working, ns, deployment)})"
        f" / on (namespace, pod, container) sum by (namespace, pod, container) ({limit})"
    )


def namespace_latency_quantile(namespace: str, quantile: float = 0.5, window: str = "5m", offset: str | None = None,
                               *, service_label: str = "service", metric: str = "http_request_duration_seconds") -> str:
    """pN latency of every service of a namespace (one series per `service_label`), optionally `offset` ago."""
    q = validate_quantile(quantile)
    w = validate_duration(window)
    lbl = validate_label_name(service_label)
    off = f" offset {validate_duration(offset)}" if offset else ""
    buckets = selector(f"{validate_metric_name(metric)}_bucket", {"namespace": validate_namespace(namespace)})
    return f"histogram_quantile({q}, sum by (le, {lbl}) (rate({buckets}[{w}]{off})))"


def namespace_cpu_throttling(namespace: str, window: str = "5m") -> str:
    """Share of throttled CFS periods per pod of a namespace (0..1)."""
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    throttled = f"increase({selector('container_cpu_cfs_throttled_periods_total', {'namespace': ns})}[{w}])"
    periods = f"increase({selector('container_cpu_cfs_periods_total', {'namespace': ns})}[{w}])"
    return f"sum by (pod) ({throttled}) / sum by (pod) ({periods})"


def namespace_cpu_usage(namespace: str, window: str = "5m", offset: str | None = None) -> str:
    """CPU cores used per pod of a namespace, optionally `offset` ago."""
    ns = validate_namespace(namespace)
    w = validate_duration(window)
    off = f" offset {validate_duration(offset)}" if offset else ""
    usage = selector("container_cpu_usage_seconds_total", {"namespace": ns}, not_equal={"container": ""})
    return f"sum by (pod) (rate({usage}[{w}]{off}))"


def firing_alerts(namespace: str) -> str:
    return selector("ALERTS", {"alertstate": "firing", "namespace": validate_namespace(namespace)})
