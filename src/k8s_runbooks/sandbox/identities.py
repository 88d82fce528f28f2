"""The shipped identities in the sandbox: `deployments/k8s/base/rbac.yaml` applied as-is, and a kubeconfig per
ServiceAccount (a TokenRequest token), so runbooks, drills and the worker run as the least-privilege accounts
they run as on GKE.

    apply_shipped_rbac(api_url)                       # namespace k8s-runbooks, ServiceAccounts, Roles, bindings
    service_account_kubeconfig(api_url, D, "k8s-runbooks", "k8s-runbooks")   # -> D/kubeconfigs/k8s-runbooks.k8s-runbooks.yaml
    grant_namespace(api_url, "cli-run")               # the runbook Role + RoleBinding copied into another namespace
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import yaml

from k8s_runbooks.sandbox.binaries import SandboxError
from k8s_runbooks.sandbox.kubeconfig import DEFAULT_CONTEXT, account_kubeconfig_path
from k8s_runbooks.sandbox.resources import KIND_TO_PLURAL, RESOURCES

ADMIN_HEADERS = {"Authorization": "Bearer sandbox-token"}
IDENTITY_NAMESPACE = "k8s-runbooks"
RUNBOOKS_SA = "k8s-runbooks"
WORKER_SA = "k8s-runbooks-worker"
TIMEOUT = 10.0


def rbac_file() -> Path:
    from k8s_runbooks.sandbox.launchers import repo_root

    return repo_root() / "deployments" / "k8s" / "base" / "rbac.yaml"


def _collection(obj: dict[str, Any]) -> str:
    res = RESOURCES[KIND_TO_PLURAL[obj["kind"]]]
    prefix = f"/apis/{res.group}/v1" if res.group else "/api/v1"
    ns = obj["metadata"].get("namespace")
    return f"{prefix}/namespaces/{ns}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"


def apply(api_url: str, objs: list[dict[str, Any]], *, replace: bool = True) -> None:
    """Create each object, or replace it when it exists (idempotent, like `kubectl apply` for whole objects);
    `replace=False` leaves existing objects as they are."""
    with httpx.Client(base_url=api_url, headers=ADMIN_HEADERS, timeout=TIMEOUT) as http:
        for obj in objs:
            path = _collection(obj)
            resp = http.post(path, json=obj)
            if resp.status_code == 409 and not replace:
                continue
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
    # Only the missing ones: an existing namespace keeps its labels (the demo's `shop` allows drills).
    apply(api_url, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in sorted(namespaces)],
          replace=False)
    apply(api_url, docs)


def grant_namespace(kubeconfig: Path, namespace: str, source_namespace: str = "shop") -> None:
    """Copy the runbook Role and its RoleBinding of rbac.yaml into `namespace`, with the kubeconfig's credentials:
    what deployments/README.md tells an operator to do for each target namespace (idempotent)."""
    from kubernetes import client, config  # only where it is used
    from kubernetes.client.exceptions import ApiException

    rbac = client.RbacAuthorizationV1Api(config.new_client_from_config(str(kubeconfig)))
    for doc in shipped_rbac():
        if doc["kind"] not in ("Role", "RoleBinding") or doc["metadata"].get("namespace") != source_namespace:
            continue
        body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        create, replace = ((rbac.create_namespaced_role, rbac.replace_namespaced_role) if doc["kind"] == "Role"
                           else (rbac.create_namespaced_role_binding, rbac.replace_namespaced_role_binding))
        try:
            create(namespace, body, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise SandboxError(f"granting the runbooks {namespace}: HTTP {exc.status} {exc.reason}") from None
            replace(doc["metadata"]["name"], namespace, body, _request_timeout=TIMEOUT)


def service_account_kubeconfig(api_url: str, state_dir: Path, namespace: str = IDENTITY_NAMESPACE,
                               name: str = RUNBOOKS_SA, seconds: int = 30 * 86_400) -> Path:
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
    path = account_kubeconfig_path(state_dir, namespace, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path
