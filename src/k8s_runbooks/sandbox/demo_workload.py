"""The demo workload (namespace `shop`: `checkout` and `payments`) and fault injection, via the official client.

Faults are env vars on the Deployment, set with a strategic-merge patch of the container env — exactly what
`kubectl set env deploy/checkout FAULT_LATENCY_MS=800` does — so every fault is a rollout, as in real life.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from k8s_runbooks.errors import InvalidInput, RunbookError, TransientError, from_http_status
from k8s_runbooks.sandbox.fault_kinds import FAULT_KINDS, FAULT_VARS, FAULTS  # noqa: F401 - re-exported

NAMESPACE = "shop"
IMAGE = "sandbox/shop:1"
PORT = 8080
DEPLOYMENTS: dict[str, int] = {"checkout": 3, "payments": 2}
REQUEST_TIMEOUT_S = 10.0
STRATEGIC = "application/strategic-merge-patch+json"
FAULT_UNDO_ANNOTATION = "k8s-runbooks.io/fault-undo"  # drills.cluster_faults.UNDO_ANNOTATION
# Feature flags: the ConfigMap the shop reads (mounted, refreshed by the kubelet) and the flag every demo
# deployment declares (k8s_runbooks.flags.FLAGS_ANNOTATION), on: `sandbox fault KIND --flag new-checkout-flow`
# puts the fault behind it, and turning it off (the set_flags containment) makes the fault go quiet.
FLAGS_CONFIGMAP = "feature-flags"
FLAGS_DIR = "/etc/feature-flags"
DEMO_FLAGS = {"new-checkout-flow": "on"}
FLAGS_ANNOTATION = "k8s-runbooks.io/feature-flags"



def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
    except ApiException as exc:
        raise from_http_status(exc.status or 0, what, str(exc.body or exc.reason or "")) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"{what}: Kubernetes API unreachable ({exc.__class__.__name__})",
                             hint="is the sandbox up? run `k8s-runbooks sandbox up`") from exc


def namespace_body(namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"k8s-runbooks.io/drills": "allowed"}}}


def deployment_body(name: str, replicas: int, namespace: str = NAMESPACE,
                    env: dict[str, str] | None = None, probe_period_ms: int = 250) -> dict[str, Any]:
    labels = {"app": name}
    container_env = [{"name": k, "value": v} for k, v in (env or {}).items()]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {FLAGS_ANNOTATION: ",".join(DEMO_FLAGS)}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    # The sandbox probes these pods every 250 ms by default (the Kubernetes minimum is 1 s): a
                    # `crash 1` fault must be seen ready before it crashes, or the rollout stalls at its first surge
                    # pod. Benchmarks that compare with kubectl keep 1000, a real cluster's pace.
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                    "sandbox.k8s-runbooks.io/probe-period-ms": str(probe_period_ms)},  # kubelet.PROBE_PERIOD_ANNOTATION
                },
                "spec": {
                    "containers": [{
                        "name": name,
                        "image": IMAGE,
                        "env": [{"name": "FEATURE_FLAGS_DIR", "value": FLAGS_DIR}, *container_env],
                        "volumeMounts": [{"name": "feature-flags", "mountPath": FLAGS_DIR, "readOnly": True}],
                        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1},
                        # Limits small enough that the OOM and CPU faults bite quickly.
                        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                                      "limits": {"cpu": "500m", "memory": "128Mi"}},
                    }],
                    "volumes": [{"name": "feature-flags", "configMap": {"name": FLAGS_CONFIGMAP, "optional": True}}],
                },
            },
        },
    }


def flags_configmap_body(namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": FLAGS_CONFIGMAP, "namespace": namespace},
            "data": dict(DEMO_FLAGS)}


def service_body(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app": name, "sandbox.k8s-runbooks.io/traffic": "true"}},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]},
    }


def ensure_demo_workload(kubeconfig: Path) -> list[str]:
    """Create what is missing (existing objects are left as they are); return what was created."""
    return ensure_workload(kubeconfig, NAMESPACE, DEPLOYMENTS)


def ensure_namespace(kubeconfig: Path, namespace: str) -> bool:
    """The namespace, labelled for drills, if it is missing; True when it was created."""
    return _create(f"create namespace {namespace}", client.CoreV1Api(api_client(kubeconfig)).create_namespace,
                   namespace_body(namespace))


def ensure_workload(kubeconfig: Path, namespace: str, deployments: dict[str, int],
                    env: dict[str, str] | None = None, probe_period_ms: int = 250) -> list[str]:
    """Namespace + one shop Deployment and Service per name (idempotent); also used by tests and drills."""
    api = api_client(kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    created: list[str] = []
    if ensure_namespace(kubeconfig, namespace):
        created.append(f"namespace/{namespace}")
    if _create(f"create configmap {namespace}/{FLAGS_CONFIGMAP}", core.create_namespaced_config_map, namespace,
               flags_configmap_body(namespace)):
        created.append(f"configmap/{FLAGS_CONFIGMAP}")
    # A target namespace gets the runbook Role of rbac.yaml, as on GKE: the runbooks run as that ServiceAccount.
    from k8s_runbooks.sandbox.identities import grant_namespace

    grant_namespace(kubeconfig, namespace)
    for name, replicas in deployments.items():
        if _create(f"create service {namespace}/{name}", core.create_namespaced_service, namespace,
                   service_body(name, namespace)):
            created.append(f"service/{name}")
        if _create(f"create deployment {namespace}/{name}", apps.create_namespaced_deployment, namespace,
                   deployment_body(name, replicas, namespace, env, probe_period_ms)):
            created.append(f"deployment/{name}")
    return created


def _create(what: str, fn: Any, *args: Any) -> bool:
    try:
        _call(what, fn, *args)
    except RunbookError as exc:
        cause = exc.__cause__
        if isinstance(cause, ApiException) and cause.status == 409:
            return False  # already exists: idempotent
        raise
    return True


def wait_ready(kubeconfig: Path, namespace: str = NAMESPACE, names: list[str] | None = None,
               timeout_s: float = 90.0) -> None:
    """Wait until each deployment has all its replicas updated and ready (like `kubectl rollout status`)."""
    apps = client.AppsV1Api(api_client(kubeconfig))
    names = names or list(DEPLOYMENTS)
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if not _rolled_out(_call(f"read deployment {namespace}/{n}",
                                                                 apps.read_namespaced_deployment, n, namespace))]
        if pending:
            time.sleep(0.5)
    if pending:
        raise TransientError(f"deployments {', '.join(pending)} in {namespace} not ready after {timeout_s:.0f}s",
                             hint=f"look at `kubectl get pods -n {namespace}` and `kubectl get events -n {namespace}`")


def _rolled_out(dep: Any) -> bool:
    want = dep.spec.replicas if dep.spec.replicas is not None else 1
    status = dep.status
    if status is None or (status.observed_generation or 0) < (dep.metadata.generation or 0):
        return False
    return ((status.updated_replicas or 0) >= want and (status.ready_replicas or 0) >= want
            and (status.replicas or 0) == want)


def active_faults(kubeconfig: Path, namespace: str, deployment: str) -> dict[str, str]:
    """FAULT_* env vars currently set on the Deployment's containers, and its cluster faults (as KIND=injected)."""
    apps = client.AppsV1Api(api_client(kubeconfig))
    dep = _call(f"read deployment {namespace}/{deployment}", apps.read_namespaced_deployment, deployment, namespace)
    env = {e.name: e.value or "" for c in dep.spec.template.spec.containers for e in (c.env or [])
           if e.name in FAULT_VARS}
    return {**env, **{kind: "injected" for kind in _cluster_faults_of(dep)}}


def _cluster_faults_of(dep: Any) -> list[str]:
    raw = (dep.metadata.annotations or {}).get(FAULT_UNDO_ANNOTATION) or "{}"
    try:
        return sorted(json.loads(raw))
    except ValueError:
        return []


def active_cluster_faults(kubeconfig: Path, namespace: str, deployment: str) -> list[str]:
    """Cluster faults recorded on the Deployment (k8s_runbooks.drills.cluster_faults)."""
    apps = client.AppsV1Api(api_client(kubeconfig))
    return _cluster_faults_of(_call(f"read deployment {namespace}/{deployment}", apps.read_namespaced_deployment,
                                    deployment, namespace))


def fault_env(kind: str, value: str | None, message: str | None = None, flag: str | None = None) -> tuple[dict[str, str], list[str]]:
    """(vars to set, vars to remove) for a fault kind; `flag` puts the fault behind that feature flag."""
    if kind == "clear":
        return {}, list(FAULT_VARS)
    if kind not in FAULTS:
        raise InvalidInput(f"unknown fault {kind!r}", hint=f"use one of {', '.join(FAULT_KINDS)}")
    var, default = FAULTS[kind]
    value = default if value is None else value
    try:
        number = float(value)
    except ValueError as exc:
        raise InvalidInput(f"fault {kind} needs a number, got {value!r}") from exc
    if number < 0 or (kind in ("errors", "cpu") and number > 1):
        raise InvalidInput(f"fault {kind} value {value} out of range", hint="errors and cpu take 0..1, others >= 0")
    env = {var: value}
    if message:
        env["FAULT_MESSAGE"] = message
    if flag:
        if flag not in DEMO_FLAGS:
            raise InvalidInput(f"unknown feature flag {flag!r}", hint=f"the demo deployments declare {', '.join(DEMO_FLAGS)}")
        env["FAULT_FLAG"] = flag
    return env, []


def set_fault(kubeconfig: Path, namespace: str, deployment: str, kind: str, value: str | None = None,
              message: str | None = None, flag: str | None = None) -> dict[str, Any]:
    """Patch the Deployment's container env like `kubectl set env`; returns what changed."""
    set_vars, remove_vars = fault_env(kind, value, message, flag)
    apps = client.AppsV1Api(api_client(kubeconfig))
    dep = _call(f"read deployment {namespace}/{deployment}", apps.read_namespaced_deployment, deployment, namespace)
    containers = []
    for container in dep.spec.template.spec.containers:
        present = {e.name for e in (container.env or [])}
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in set_vars.items()]
        env += [{"name": k, "$patch": "delete"} for k in remove_vars if k in present]
        if env:
            containers.append({"name": container.name, "env": env})
    if containers:
        patch = {"spec": {"template": {"spec": {"containers": containers}}}}
        _call(f"patch deployment {namespace}/{deployment}", apps.patch_namespaced_deployment,
              deployment, namespace, patch, _content_type=STRATEGIC)
    return {"namespace": namespace, "deployment": deployment, "set": set_vars,
            "removed": [k for c in containers for e in c["env"] if e.get("$patch") for k in [e["name"]]]}
