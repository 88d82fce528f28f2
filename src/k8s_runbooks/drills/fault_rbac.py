"""What a cluster fault needs beyond the runbooks' Role, and the check that refuses a drill up front without it.

Three families change objects the runbooks never touch: `missing-secret` reads, copies, deletes and puts back a
Secret; `quota` creates and deletes a ResourceQuota; `taint` patches every node (cluster-wide) and reads each one
back to untaint it. The runbooks' identity (`deployments/k8s/base/rbac.yaml`) does not hold these grants and should
not: a team that wants these drills applies the opt-in manifest `INJECTOR_MANIFEST`, which grants exactly `NEEDS`
(tests/unit/test_drill_injector_rbac.py keeps the two equal; tests/drills/test_family_drill_rbac.py observes the
injectors' requests on the sandbox).

Before injecting, the guard asks the API server what the caller may do (a SelfSubjectAccessReview per grant, the
request behind `kubectl auth can-i`, which every authenticated identity may make). A missing grant refuses the
fault with the grant and the manifest named: nothing is changed, so nothing is left half-injected (say a reference
and a Secret added but the Secret not deletable, or every node tainted by an identity that cannot read them back).
The grants of `clear` are checked too: a fault that cannot be undone is not injected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k8s_runbooks.errors import Forbidden, NotFound
from k8s_runbooks.kube.client import Kube, Op

INJECTOR_MANIFEST = "deployments/k8s/drills/rbac-drill-injector.yaml"
INJECTOR_ROLE = "k8s-runbooks-drill-injector"  # Role + RoleBinding, in each namespace drills may break
INJECTOR_CLUSTER_ROLE = "k8s-runbooks-drill-injector-nodes"  # ClusterRole + ClusterRoleBinding (taint only)
DOCS = "deployments/README.md, section 6"


@dataclass(frozen=True)
class Grant:
    """One RBAC grant: `verb` on `resource` of API group `group`, in the target namespace or cluster-wide."""

    verb: str
    resource: str
    group: str = ""
    namespaced: bool = True


# fault kind -> what inject and clear call beyond the runbooks' Role (cluster_faults.py, fault_secrets.py)
NEEDS: dict[str, tuple[Grant, ...]] = {
    "missing-secret": (Grant("get", "secrets"), Grant("create", "secrets"), Grant("delete", "secrets")),
    "quota": (Grant("create", "resourcequotas"), Grant("delete", "resourcequotas")),
    "taint": (Grant("get", "nodes", namespaced=False), Grant("patch", "nodes", namespaced=False)),
}


def _allowed(kube: Kube, namespace: str, grant: Grant) -> bool:
    from kubernetes import client as k8s  # the authorization API class only where a drill needs it

    attrs: dict[str, Any] = {"verb": grant.verb, "resource": grant.resource, "group": grant.group}
    if grant.namespaced:
        attrs["namespace"] = namespace
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}
    api = k8s.AuthorizationV1Api(kube.api_client)
    review = kube.call(Op("create", "selfsubjectaccessreviews"), api.create_self_subject_access_review, body)
    return bool(review.status and review.status.allowed)


def _where(grants: list[Grant], namespace: str) -> str:
    verbs = ", ".join(g.verb for g in grants)
    g = grants[0]
    kind = f"{g.resource}.{g.group}" if g.group else g.resource
    return f"{verbs} {kind}" + (f" in namespace {namespace}" if g.namespaced else " (cluster-wide)")


def _opt_in(missing: list[Grant], namespace: str) -> str:
    objects = []
    if any(g.namespaced for g in missing):
        objects.append(f"Role and RoleBinding {INJECTOR_ROLE} in namespace {namespace}")
    if any(not g.namespaced for g in missing):
        objects.append(f"ClusterRole and ClusterRoleBinding {INJECTOR_CLUSTER_ROLE}")
    return f"apply the opt-in manifest {INJECTOR_MANIFEST} ({'; '.join(objects)}; {DOCS})"


def refusal(kube: Kube, namespace: str, kind: str) -> str:
    """Why this identity may not inject cluster fault `kind` into `namespace` ("" when it may)."""
    needs = NEEDS.get(kind, ())
    if not needs:
        return ""
    try:
        missing = [g for g in needs if not _allowed(kube, namespace, g)]
    except (Forbidden, NotFound) as exc:  # no access review API for this identity: cannot know, do not guess
        return (f"the {kind} fault needs grants the runbooks' Role does not hold, and they could not be checked "
                f"(SelfSubjectAccessReview: {exc.message}); nothing injected. To allow it, {_opt_in(list(needs), namespace)}")
    if not missing:
        return ""
    by_resource: dict[tuple[str, str, bool], list[Grant]] = {}
    for g in missing:
        by_resource.setdefault((g.group, g.resource, g.namespaced), []).append(g)
    cannot = "; ".join(_where(gs, namespace) for gs in by_resource.values())
    return (f"the drill's identity may not inject the {kind} fault: missing RBAC grant {cannot} (kubectl auth can-i); "
            f"nothing injected. To allow {kind} drills, {_opt_in(missing, namespace)}")
