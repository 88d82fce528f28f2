"""The shipped identities in the sandbox: `deployments/k8s/base/rbac.yaml` applied as-is, and a kubeconfig per
ServiceAccount (a TokenRequest token), so runbooks, drills and the worker run as the least-privilege accounts
they run as on GKE.

    apply_shipped_rbac(api_url)                       # namespace k8s-runbooks, ServiceAccounts, Roles, bindings
    service_account_kubeconfig(api_url, dir, "k8s-runbooks", "k8s-runbooks")   # -> dir/k8s-runbooks.k8s-runbooks.yaml
    grant_namespace(api_url, "cli-run")               # the runbook Role + RoleBinding copied into another namespace
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import yaml

from k8s_runbooks.sandbox.binaries import SandboxError
from k8s_runbooks.sandbox.launchers import repo_root
from k8s_runbooks.sandbox.kubeconfig import DEFAULT_CONTEXT
from k8s_runbooks.sandbox.resources import KIND_TO_PLURAL, RESOURCES

ADMIN_HEADERS = {"Authorization": "Bearer sandbox-token"}
IDENTITY_NAMESPACE = "k8s-runbooks"
RUNBOOKS_SA = "k8s-runbooks"
WORKER_SA = "k8s-runbooks-worker"
TIMEOUT = 10.0


def rbac_file() -> Path:
    return repo_root() / "deployments" / "k8s" / "base" / "rbac.yaml"


def _collection(obj: dict[str, Any]) -> str:
    res = RESOURCES[KIND_TO_PLURAL[obj["kind"]]]
    prefix = f"/apis/{res.group}/v1" if res.group else "/api/v1"
    ns = obj["metadata"].get("namespace")
    return f"{prefix}/namespaces/{ns}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"


def apply(api_url: str, objs: list[dict[str, Any]]) -> None:
    """Create each object, or replace it when it exists (idempotent, like `kubectl apply` for whole objects)."""
    with httpx.Client(base_url=api_url, headers=ADMIN_HEADERS, timeout=TIMEOUT) as http:
        for obj in objs:
            path = _collection(obj)
            resp = http.post(path, json=obj)
            if resp.status_code == 409:
                resp = http.put(f"{path}/{obj['metadata']['name']}", json=obj)
            if resp.status_code >= 300:
                raise SandboxError(f"applying {obj['kind']} {obj['metadata']['name']} failed: HTTP {resp.status_code} "
                                   f"{resp.text[:300]}")


def shipped_rbac() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rbac_file().read_text()) if isinstance(d, dict)]


def apply_shipped_rbac(api_url: str) -> None:
    """The identities namespace and everything in rbac.yaml (its target-namespace Roles need those namespaces)."""
    docs = shipped_rbac()
    namespaces = {IDENTITY_NAMESPACE} | {d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")}
    apply(api_url, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in sorted(namespaces)])
    apply(api_url, docs)


def grant_namespace(api_url: str, namespace: str, source_namespace: str = "shop") -> None:
    """Copy the runbook Role and its RoleBinding into `namespace` (deployments/README.md: adding a target
    namespace)."""
    docs = [d for d in shipped_rbac() if d["kind"] in ("Role", "RoleBinding") and d["metadata"].get("namespace") == source_namespace]
    apply(api_url, [{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in docs])


def service_account_kubeconfig(api_url: str, directory: Path, namespace: str = IDENTITY_NAMESPACE,
                               name: str = RUNBOOKS_SA, seconds: int = 86_400) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token, 0600)."""
    with httpx.Client(base_url=api_url, headers=ADMIN_HEADERS, timeout=TIMEOUT) as http:
        resp = http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                         json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": seconds}})
    if resp.status_code >= 300:
        raise SandboxError(f"token for {namespace}/{name}: HTTP {resp.status_code} {resp.text[:300]}")
    token = resp.json()["status"]["token"]
    context = f"{DEFAULT_CONTEXT}-{name}"
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": context, "preferences": {},
           "clusters": [{"name": DEFAULT_CONTEXT, "cluster": {"server": api_url}}],
           "users": [{"name": f"{namespace}/{name}", "user": {"token": token}}],
           "contexts": [{"name": context, "context": {"cluster": DEFAULT_CONTEXT, "user": f"{namespace}/{name}",
                                                      "namespace": namespace}}]}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{namespace}.{name}.yaml"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path
