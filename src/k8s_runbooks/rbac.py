"""Least privilege: derive minimal RBAC rules from observed API requests and compare them with shipped rules.

Observed requests come from the sandbox API's request audit (`GET /sandbox/audit`: verb, resource,
subresource, namespace, API group, count). A request made in a namespace needs a namespaced Role in the
target namespaces; a request without one (a cluster-scoped object such as a Namespace, or a list across all
namespaces) needs a ClusterRole. Rules are compared as sets of (apiGroup, resource[/subresource], verb)
grants, so how the rules are grouped in YAML does not matter.

Prefect-free and Kubernetes-client-free: a CLI command can print `render(derive(...))` later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

Scope = Literal["namespaced", "cluster"]
Grant = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)

# Grants a runbook identity must never hold, whatever a test run observed.
FORBIDDEN_RESOURCES = frozenset({"secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token",
                                 "roles", "rolebindings", "clusterroles", "clusterrolebindings"})
FORBIDDEN_VERBS = frozenset({"escalate", "bind", "impersonate"})
# Granted to every authenticated identity by the default ClusterRole `system:basic-user` (what `kubectl auth can-i`
# sends): observed, never part of a shipped Role.
IMPLICIT_GRANTS = frozenset({("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
                             ("authorization.k8s.io", "selfsubjectrulesreviews", "create")})
VERB_ORDER = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


@dataclass
class Rules:
    """Grants per scope."""

    namespaced: set[Grant] = field(default_factory=set)
    cluster: set[Grant] = field(default_factory=set)

    def of(self, scope: Scope) -> set[Grant]:
        return self.namespaced if scope == "namespaced" else self.cluster

    def __or__(self, other: "Rules") -> "Rules":
        return Rules(self.namespaced | other.namespaced, self.cluster | other.cluster)


def derive(requests: Iterable[Mapping[str, Any]]) -> Rules:
    """Minimal grants for `requests` (audit entries with verb, resource, subresource, namespace, group)."""
    rules = Rules()
    for r in requests:
        if int(r.get("count", 1)) <= 0:
            continue
        resource = str(r["resource"]) + (f"/{r['subresource']}" if r.get("subresource") else "")
        grant = (str(r.get("group") or ""), resource, str(r["verb"]))
        if grant in IMPLICIT_GRANTS:
            continue
        (rules.namespaced if r.get("namespace") else rules.cluster).add(grant)
    return rules


def grants_of(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """Expand Role/ClusterRole `rules:` into grants (wildcards are kept literally, as '*')."""
    out: set[Grant] = set()
    for rule in rules or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((str(group), str(resource), str(verb)))
    return out


def shipped(manifests: str, service_account: str) -> Rules:
    """Grants of the Roles and ClusterRoles bound to `service_account` in a multi-document RBAC YAML."""
    docs = [d for d in yaml.safe_load_all(manifests) if isinstance(d, dict)]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs
             if d.get("kind") in ("Role", "ClusterRole")}
    rules = Rules()
    for binding in docs:
        if binding.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], ns, ref["name"]))
        if role is None:
            raise ValueError(f"{binding['kind']} {binding['metadata']['name']} refers to missing {ref['kind']} {ref['name']}")
        # A ClusterRole bound by a RoleBinding only grants inside that namespace.
        scope: Scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else "namespaced"
        rules.of(scope).update(grants_of(role.get("rules") or []))
    return rules


def problems(rules: Rules) -> list[str]:
    """Grants that must never be there: wildcards, secrets, exec/attach/port-forward, RBAC escalation."""
    found = []
    for scope in ("namespaced", "cluster"):
        for group, resource, verb in sorted(rules.of(scope)):  # type: ignore[arg-type]
            if "*" in (group, resource, verb):
                found.append(f"{scope}: wildcard in {group or 'core'}/{resource} {verb}")
            if resource in FORBIDDEN_RESOURCES or resource.split("/")[0] == "secrets":
                found.append(f"{scope}: forbidden resource {resource} ({verb})")
            if verb in FORBIDDEN_VERBS:
                found.append(f"{scope}: forbidden verb {verb} on {resource}")
    return found


def compare(derived: Rules, actual: Rules) -> dict[str, dict[str, list[Grant]]]:
    """{"missing": {scope: grants needed but not shipped}, "extra": {scope: grants shipped but never used}}."""
    return {
        "missing": {s: sorted(derived.of(s) - actual.of(s)) for s in ("namespaced", "cluster")},  # type: ignore[arg-type]
        "extra": {s: sorted(actual.of(s) - derived.of(s)) for s in ("namespaced", "cluster")},  # type: ignore[arg-type]
    }


def rules_yaml(grants: set[Grant]) -> list[dict[str, Any]]:
    """Compact `rules:`: one rule per (apiGroup, verb set), resources sorted."""
    by_resource: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in grants:
        by_resource.setdefault((group, resource), set()).add(verb)
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in sorted(by_resource.items()):
        ordered = tuple(sorted(verbs, key=lambda v: (VERB_ORDER.index(v) if v in VERB_ORDER else 99, v)))
        merged.setdefault((group, ordered), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            for (group, verbs), resources in sorted(merged.items())]


def render(rules: Rules, *, name: str = "k8s-runbooks", namespace: str = "TARGET-NAMESPACE") -> str:
    """The minimal Role (per target namespace) and ClusterRole as YAML."""
    docs: list[dict[str, Any]] = []
    if rules.namespaced:
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                     "metadata": {"name": name, "namespace": namespace}, "rules": rules_yaml(rules.namespaced)})
    if rules.cluster:
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": f"{name}-read"}, "rules": rules_yaml(rules.cluster)})
    return yaml.safe_dump_all(docs, sort_keys=False)
