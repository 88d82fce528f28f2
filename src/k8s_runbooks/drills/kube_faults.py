"""Kubernetes side of drill faults: the namespace opt-in label, fault env reads, and the env patch.

`_set_env` changes the cluster and is called ONLY by `guard.Guard.execute` (inject_fault/remove_fault).
"""

from __future__ import annotations

from typing import Any

from k8s_runbooks.drills.model import DRILLS_ALLOWED, DRILLS_LABEL
from k8s_runbooks.errors import NotFound
from k8s_runbooks.kube.client import Kube, Op
from k8s_runbooks.kube.pods import read_deployment

STRATEGIC = "application/strategic-merge-patch+json"


def namespace_allows_drills(kube: Kube, namespace: str) -> tuple[bool, str]:
    try:
        ns = kube.call(Op("get", "namespaces", None, namespace), kube.core.read_namespace, namespace)
    except NotFound:
        return False, f"namespace {namespace} does not exist"
    value = (ns.metadata.labels or {}).get(DRILLS_LABEL)
    if value != DRILLS_ALLOWED:
        return False, (f"namespace {namespace} is not labelled {DRILLS_LABEL}={DRILLS_ALLOWED} "
                       f"(kubectl label namespace {namespace} {DRILLS_LABEL}={DRILLS_ALLOWED})")
    return True, f"namespace {namespace} allows drills"


def active_env(kube: Kube, namespace: str, name: str, names: list[str]) -> dict[str, str]:
    """Which of `names` are set on the Deployment's containers now."""
    dep = read_deployment(kube, namespace, name)
    return {e.name: e.value or "" for c in dep.spec.template.spec.containers for e in (c.env or []) if e.name in names}


def _set_env(kube: Kube, namespace: str, name: str, set_vars: dict[str, str], remove_vars: list[str]) -> str:
    """Like `kubectl set env deploy/NAME A=1 B-`: one strategic-merge patch of every container's env."""
    dep = read_deployment(kube, namespace, name)
    containers: list[dict[str, Any]] = []
    removed: list[str] = []
    for c in dep.spec.template.spec.containers:
        present = {e.name for e in (c.env or [])}
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in set_vars.items()]
        gone = [k for k in remove_vars if k in present]
        removed += gone
        env += [{"name": k, "$patch": "delete"} for k in gone]
        if env:
            containers.append({"name": c.name, "env": env})
    if not containers:
        return f"{namespace}/{name}: nothing to change (none of {', '.join(remove_vars) or '-'} set)"
    body = {"spec": {"template": {"spec": {"containers": containers}}}}
    kube.call(Op("patch", "deployments", namespace, name), kube.apps.patch_namespaced_deployment, name, namespace, body,
              _content_type=STRATEGIC)
    parts = []
    if set_vars:
        parts.append("set " + ", ".join(f"{k}={v}" for k, v in set_vars.items()))
    if removed:
        parts.append("removed " + ", ".join(sorted(set(removed))))
    return f"{namespace}/{name}: " + "; ".join(parts)
