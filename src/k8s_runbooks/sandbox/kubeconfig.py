"""Kubeconfig for the sandbox API: an ordinary file that kubectl and the official client read as-is."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

DEFAULT_CONTEXT = "k8s-runbooks-sandbox"
RUNBOOKS_ACCOUNT = ("k8s-runbooks", "k8s-runbooks")  # namespace, ServiceAccount (deployments/k8s/base/rbac.yaml)


def account_kubeconfig_path(state_dir: Path | str, namespace: str = RUNBOOKS_ACCOUNT[0],
                            name: str = RUNBOOKS_ACCOUNT[1]) -> Path:
    """Where `sandbox up` writes the kubeconfig of a shipped ServiceAccount (sandbox/identities.py)."""
    return Path(state_dir) / "kubeconfigs" / f"{namespace}.{name}.yaml"


def kubeconfig_dict(server_url: str, context: str = DEFAULT_CONTEXT) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {"token": "sandbox-token"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path | str, server_url: str, context: str = DEFAULT_CONTEXT) -> Path:
    """Write (atomically, mode 0600) a kubeconfig pointing at `server_url` and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        yaml.safe_dump(kubeconfig_dict(server_url, context), fh, sort_keys=False)
    os.replace(tmp, path)
    return path
