"""The `missing-secret` fault as it happens on real clusters: a Secret that a healthy revision uses is deleted
(a clean-up script, a rotation gone wrong, a namespace copied without its Secrets), and the next pod that starts
(a node drain, a crash, a scale-up) cannot be configured: `CreateContainerConfigError`, `secret "x" not found`,
while the other pods of the same revision keep running.

If the workload references no Secret, the fault first gives it one (a Secret `<deployment>-db-credentials` and
env `DB_PASSWORD` from it: a rollout, waited for until healthy), so the template that then fails is one that
has been proven to work. A Secret that existed before is kept as a copy in the cluster (`<name>-fault-backup`,
labelled `k8s-runbooks.io/fault=missing-secret`; its data never leaves the API) and `clear` puts it back under
its name; a Secret the fault created is removed together with the reference it added.

Called ONLY by `cluster_faults.inject/clear`, themselves only called by `guard.Guard.execute`.
"""

from __future__ import annotations

import base64
import secrets as tokens
import time
from typing import Any

from k8s_runbooks.errors import NotFound, TransientError
from k8s_runbooks.kube.client import Kube, Op
from k8s_runbooks.kube.workloads import looks_rolled_out

SECRET_ENV = "DB_PASSWORD"
SECRET_KEY = "password"
BACKUP_SUFFIX = "-fault-backup"
FAULT_LABEL = "k8s-runbooks.io/fault"
STRATEGIC = "application/strategic-merge-patch+json"
ROLLOUT_TIMEOUT_SECONDS = 120.0  # the reference's rollout must be healthy before its Secret goes


def referenced_secrets(container: dict[str, Any]) -> list[str]:
    """Secrets the container's env and envFrom read, in order, without repeats."""
    names = [((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") for e in container.get("env") or []]
    names += [(e.get("secretRef") or {}).get("name") for e in container.get("envFrom") or []]
    return list(dict.fromkeys(n for n in names if n))


def _read_secret(kube: Kube, ns: str, name: str) -> Any | None:
    try:
        return kube.call(Op("get", "secrets", ns, name), kube.core.read_namespaced_secret, name, ns)
    except NotFound:
        return None


def _create_secret(kube: Kube, ns: str, body: dict[str, Any]) -> None:
    kube.call(Op("create", "secrets", ns, body["metadata"]["name"]), kube.core.create_namespaced_secret, ns, body)


def _delete_secret(kube: Kube, ns: str, name: str) -> bool:
    try:
        kube.call(Op("delete", "secrets", ns, name), kube.core.delete_namespaced_secret, name, ns)
        return True
    except NotFound:
        return False


def _copy(secret: Any, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": dict(secret.metadata.annotations or {})},
            "type": secret.type or "Opaque", "data": dict(secret.data or {})}


def _wait_rolled_out(kube: Kube, ns: str, name: str) -> None:
    deadline = time.monotonic() + ROLLOUT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        dep = kube.call(Op("get", "deployments", ns, name), kube.apps.read_namespaced_deployment, name, ns)
        if looks_rolled_out(kube.api_client.sanitize_for_serialization(dep)):
            return
        time.sleep(1.0)
    raise TransientError(f"{ns}/{name} did not roll out the Secret reference within {ROLLOUT_TIMEOUT_SECONDS:.0f} s; "
                         "nothing was deleted", hint=f"kubectl rollout status deployment/{name} -n {ns}")


def _add_reference(kube: Kube, ns: str, name: str, container: str) -> str:
    secret = f"{name}-db-credentials"
    if _read_secret(kube, ns, secret) is None:
        value = base64.b64encode(tokens.token_urlsafe(18).encode()).decode()
        _create_secret(kube, ns, {"metadata": {"name": secret, "labels": {FAULT_LABEL: "missing-secret"}},
                                  "type": "Opaque", "data": {SECRET_KEY: value}})
    env = [{"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_KEY}}}]
    kube.call(Op("patch", "deployments", ns, name), kube.apps.patch_namespaced_deployment, name, ns,
              {"spec": {"template": {"spec": {"containers": [{"name": container, "env": env}]}}}}, _content_type=STRATEGIC)
    _wait_rolled_out(kube, ns, name)
    return secret


def _one_running_pod(kube: Kube, ns: str, dep: Any) -> str | None:
    selector = ",".join(f"{k}={v}" for k, v in sorted((dep.spec.selector.match_labels or {}).items()))
    pods = kube.call(Op("list", "pods", ns), kube.core.list_namespaced_pod, ns, label_selector=selector).items
    running = sorted(p.metadata.name for p in pods if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp)
    return running[0] if running else None


def delete_used_secret(kube: Kube, ns: str, name: str, dep: dict[str, Any], container: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Delete a Secret the workload's healthy revision reads, then one of its pods; returns (undo record, what)."""
    existing = [s for s in referenced_secrets(container) if _read_secret(kube, ns, s) is not None]
    added = not existing
    secret = _add_reference(kube, ns, name, container["name"]) if added else existing[0]
    undo: dict[str, Any] = {"container": container["name"], "secret": secret, "added": added, "backup": None}
    if not added:
        original = _read_secret(kube, ns, secret)
        backup = secret[: 253 - len(BACKUP_SUFFIX)] + BACKUP_SUFFIX
        _delete_secret(kube, ns, backup)
        _create_secret(kube, ns, _copy(original, backup, {**(original.metadata.labels or {}), FAULT_LABEL: "missing-secret"}))
        undo["backup"] = backup
    _delete_secret(kube, ns, secret)
    live = kube.call(Op("get", "deployments", ns, name), kube.apps.read_namespaced_deployment, name, ns)
    pod = _one_running_pod(kube, ns, live)
    if pod:  # as a node drain or a crash would: its replacement starts without the Secret
        kube.call(Op("delete", "pods", ns, pod), kube.core.delete_namespaced_pod, pod, ns, grace_period_seconds=5)
    what = (f"secret {secret} deleted" + (f" (kept as {undo['backup']})" if undo["backup"] else
                                          f" (created for it, read as env {SECRET_ENV} by a healthy revision)")
            + (f", pod {pod} recreated" if pod else ""))
    return undo, what


def restore_secret(kube: Kube, ns: str, name: str, undo: dict[str, Any]) -> None:
    """Put the Secret back from its copy, or drop the reference and the Secret the fault added."""
    secret = str(undo["secret"])
    if undo.get("added"):
        kube.call(Op("patch", "deployments", ns, name), kube.apps.patch_namespaced_deployment, name, ns,
                  {"spec": {"template": {"spec": {"containers": [
                      {"name": undo["container"], "env": [{"name": SECRET_ENV, "$patch": "delete"}]}]}}}},
                  _content_type=STRATEGIC)
        _delete_secret(kube, ns, secret)
        return
    backup = undo.get("backup")
    copy = _read_secret(kube, ns, backup) if backup else None
    if copy is not None and _read_secret(kube, ns, secret) is None:
        labels = {k: v for k, v in (copy.metadata.labels or {}).items() if k != FAULT_LABEL}
        _create_secret(kube, ns, _copy(copy, secret, labels))
    if backup:
        _delete_secret(kube, ns, backup)
