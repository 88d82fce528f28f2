"""Authentication, impersonation and RBAC authorization of the sandbox API, as kube-apiserver does them.

- **Who**: the kubeconfig's `sandbox-token` is the cluster admin (`sandbox-admin`, group `system:masters`);
  ServiceAccount tokens come from the TokenRequest API (`kubectl create token SA -n NS`,
  `POST .../serviceaccounts/NAME/token`): JWTs naming `system:serviceaccount:NS:NAME`, valid while that
  ServiceAccount (same uid) exists and until they expire. Any other token: 401 Unauthorized. A request with
  no credentials is served as the admin, like the old insecure port (the sandbox's own tools and the
  Prometheus scrapes use it).
- **Impersonation**: `Impersonate-User` / `Impersonate-Group` headers (`kubectl --as`, `--as-group`), allowed
  for system:masters or for whoever RBAC grants `impersonate` on users / groups / serviceaccounts.
- **Authorization**: RBAC over the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in the store,
  plus the bootstrap roles every cluster has (discovery and self-reviews for system:authenticated). A denial
  is a 403 `Forbidden` Status with kube-apiserver's wording.
- **Reviews**: SelfSubjectAccessReview (`kubectl auth can-i`) and SubjectAccessReview answer from the same
  evaluation, with RBAC's "allowed by ..." reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.store import Store

Obj = dict[str, Any]
ADMIN_TOKEN = "sandbox-token"
ADMIN = "sandbox-admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"
ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_TOKEN_SECONDS = 3600
REVIEW_RESOURCES = ("selfsubjectaccessreviews", "subjectaccessreviews")

# Bootstrap policy of every cluster (kube-apiserver's `system:discovery`, `system:basic-user`, `cluster-admin`).
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/",
                   "/openapi", "/openapi/*"]
BOOTSTRAP_CLUSTER_ROLES: dict[str, list[Obj]] = {
    "cluster-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}],
    "system:discovery": [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
    "system:basic-user": [{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews",
                                                                                 "selfsubjectrulesreviews"], "verbs": ["create"]}],
}
BOOTSTRAP_BINDINGS = {"cluster-admin": ("Group", MASTERS), "system:discovery": ("Group", AUTHENTICATED),
                      "system:basic-user": ("Group", AUTHENTICATED)}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    @classmethod
    def service_account(cls, namespace: str, name: str, uid: str = "") -> "User":
        return cls(f"{SA_PREFIX}{namespace}:{name}", ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                                      AUTHENTICATED), uid)


@dataclass
class Attributes:
    """What a request asks: kube-apiserver's authorizer.Attributes."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests only
    resource_request: bool = True

    def resource_text(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class Decision:
    allowed: bool
    reason: str = ""
    evaluation_errors: list[str] = field(default_factory=list)


def load_signing_key(state_dir: Path | None) -> bytes | None:
    """The key ServiceAccount tokens are signed with, kept in the state dir so tokens outlive a cluster restart."""
    if state_dir is None:
        return None
    path = Path(state_dir) / "sa-signing.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(key.hex())
        return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _matches(values: list[str] | None, value: str) -> bool:
    return bool(values) and ("*" in values or value in values)


def _rule_allows(rule: Obj, a: Attributes) -> bool:
    if not _matches(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        urls = rule.get("nonResourceURLs") or []
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1])) for u in urls)
    if not _matches(rule.get("apiGroups"), a.group):
        return False
    resources = rule.get("resources") or []
    wanted = a.resource_text()
    if not ("*" in resources or wanted in resources or (a.subresource and f"*/{a.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def _subject_matches(subject: Obj, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        return user.name == f"{SA_PREFIX}{subject.get('namespace') or binding_namespace}:{name}"
    return False


def _describe_subject(subject: Obj, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("namespace") or binding_namespace}/{subject.get("name")}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


class Authorizer:
    """The sandbox API's authn/authz; `ApiServer` calls `admit` before serving each Kubernetes request."""

    def __init__(self, store: Store, signing_key: bytes | None = None) -> None:
        self.store = store
        self._key = signing_key or secrets.token_bytes(32)

    # ------------------------------------------------------------------------------ tokens
    def issue_token(self, namespace: str, name: str, seconds: int = DEFAULT_TOKEN_SECONDS,
                    audiences: list[str] | None = None) -> tuple[str, int]:
        """A ServiceAccount token (JWT, HS256) and its expiry (epoch seconds). 404 if the SA does not exist."""
        sa = self.store.get("serviceaccounts", namespace, name)
        now = int(time.time())
        exp = now + max(600, int(seconds))
        claims = {"aud": audiences or [ISSUER], "exp": exp, "iat": now, "iss": ISSUER, "nbf": now,
                  "sub": f"{SA_PREFIX}{namespace}:{name}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}}}
        head = _b64(json.dumps({"alg": "HS256", "kid": "sandbox", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}", exp

    def _token_user(self, token: str) -> User | None:
        try:
            head, body, sig = token.split(".")
            expected = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(sig, expected):
                return None
            claims = json.loads(_unb64(body))
            ref = claims["kubernetes.io"]
            ns, name, uid = ref["namespace"], ref["serviceaccount"]["name"], ref["serviceaccount"]["uid"]
        except (ValueError, KeyError, TypeError):
            return None
        if int(claims.get("exp", 0)) < time.time():
            return None
        sa = self.store.try_get("serviceaccounts", ns, name)
        if sa is None or sa["metadata"]["uid"] != uid:
            return None  # deleted (or re-created) ServiceAccount: its tokens die with it
        return User.service_account(ns, name, uid)

    def authenticate(self, headers: Any) -> User:
        auth = (headers.get("Authorization") or "").strip()
        if not auth:
            return User(ADMIN, (MASTERS, AUTHENTICATED))  # the insecure-port behaviour: see the module docstring
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == ADMIN_TOKEN:
            return User(ADMIN, (MASTERS, AUTHENTICATED))
        user = self._token_user(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def impersonate(self, user: User, headers: Any) -> User:
        target = headers.get("Impersonate-User")
        groups = headers.get_all("Impersonate-Group") if hasattr(headers, "get_all") else None
        if not target:
            if groups:
                raise ApiError(500, "InternalError", "Internal error occurred: requested [" + ", ".join(
                    f"{{Group  {g}  authentication.k8s.io/v1  }}" for g in groups) + "] without impersonating a user")
            return user
        if target.startswith(SA_PREFIX) and target.count(":") == 3:
            ns, name = target[len(SA_PREFIX):].split(":")
            attrs = Attributes("impersonate", "", "serviceaccounts", namespace=ns, name=name)
        else:
            attrs = Attributes("impersonate", "", "users", name=target)
        if not self.authorize(user, attrs).allowed:
            raise self.forbidden(user, attrs)
        for g in groups or []:
            ga = Attributes("impersonate", "", "groups", name=g)
            if not self.authorize(user, ga).allowed:
                raise self.forbidden(user, ga)
        if target.startswith(SA_PREFIX) and target.count(":") == 3:
            ns, name = target[len(SA_PREFIX):].split(":")
            base = User.service_account(ns, name)
            return User(base.name, tuple(dict.fromkeys([*base.groups, *(groups or [])])))
        return User(target, tuple(dict.fromkeys([*(groups or []), AUTHENTICATED])))

    # ------------------------------------------------------------------------------ RBAC
    def _cluster_role_rules(self, name: str) -> list[Obj]:
        role = self.store.try_get("clusterroles", None, name)
        if role is not None:
            return role.get("rules") or []
        return BOOTSTRAP_CLUSTER_ROLES.get(name, [])

    def authorize(self, user: User, a: Attributes) -> Decision:
        if MASTERS in user.groups:
            return Decision(True, "")
        for name, (kind, subject) in BOOTSTRAP_BINDINGS.items():
            if _subject_matches({"kind": kind, "name": subject}, user, "") and any(
                    _rule_allows(r, a) for r in BOOTSTRAP_CLUSTER_ROLES[name]):
                return Decision(True, f'RBAC: allowed by ClusterRoleBinding "{name}" of ClusterRole "{name}" to Group "{subject}"')
        bindings, _ = self.store.list("clusterrolebindings")
        for b in bindings:
            ref = b.get("roleRef") or {}
            for s in b.get("subjects") or []:
                if _subject_matches(s, user, "") and ref.get("kind") == "ClusterRole" and any(
                        _rule_allows(r, a) for r in self._cluster_role_rules(ref.get("name", ""))):
                    return Decision(True, f'RBAC: allowed by ClusterRoleBinding "{b["metadata"]["name"]}" of ClusterRole '
                                          f'"{ref.get("name")}" to {_describe_subject(s, "")}')
        if a.namespace and a.resource_request:
            bindings, _ = self.store.list("rolebindings", a.namespace)
            for b in bindings:
                ref, ns = b.get("roleRef") or {}, b["metadata"]["namespace"]
                if ref.get("kind") == "Role":
                    role = self.store.try_get("roles", ns, ref.get("name", ""))
                    rules = (role or {}).get("rules") or []
                else:
                    rules = self._cluster_role_rules(ref.get("name", ""))
                for s in b.get("subjects") or []:
                    if _subject_matches(s, user, ns) and any(_rule_allows(r, a) for r in rules):
                        return Decision(True, f'RBAC: allowed by RoleBinding "{b["metadata"]["name"]}/{ns}" of '
                                              f'{ref.get("kind")} "{ref.get("name")}" to {_describe_subject(s, ns)}')
        return Decision(False, "")

    @staticmethod
    def forbidden(user: User, a: Attributes) -> ApiError:
        """kube-apiserver's Forbidden Status for `a`."""
        if not a.resource_request:
            return ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"')
        res = f"{a.resource}.{a.group}" if a.group else a.resource
        subject = f'{res} "{a.name}"' if a.name else res
        scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        message = (f'{subject} is forbidden: User "{user.name}" cannot {a.verb} resource "{a.resource_text()}" '
                   f'in API group "{a.group}" {scope}')
        details: Obj = {"kind": a.resource}
        if a.name:
            details["name"] = a.name
        if a.group:
            details["group"] = a.group
        return ApiError(403, "Forbidden", message, details)

    def identify(self, headers: Any) -> User:
        """Authenticate and impersonate: who the request acts as (401/403 ApiError otherwise)."""
        return self.impersonate(self.authenticate(headers), headers)

    def check(self, user: User, a: Attributes) -> User:
        if not self.authorize(user, a).allowed:
            raise self.forbidden(user, a)
        return user

    def admit(self, headers: Any, a: Attributes) -> User:
        """Authenticate, impersonate, authorize; the effective user, or a 401/403 ApiError."""
        return self.check(self.identify(headers), a)

    # ------------------------------------------------------------------------------ reviews
    def review(self, user: User, kind: str, body: Obj) -> Obj:
        """The answered SelfSubjectAccessReview / SubjectAccessReview (`kind` is the plural)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise ApiError.bad_request("the body must be an authorization.k8s.io/v1 review with a spec")
        if kind == "subjectaccessreviews":
            if not spec.get("user") and not spec.get("groups"):
                raise ApiError.invalid("SubjectAccessReview.authorization.k8s.io", "",
                                       [("spec.user", "Invalid value: \"\": at least one of user or group must be specified")])
            subject = User(spec.get("user") or "", tuple(spec.get("groups") or ()), spec.get("uid") or "")
            if subject.name.startswith(SA_PREFIX) and subject.name.count(":") == 3 and not subject.groups:
                ns, name = subject.name[len(SA_PREFIX):].split(":")
                subject = User.service_account(ns, name)
        else:
            subject = user
        res, nonres = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(res, dict):
            a = Attributes(str(res.get("verb") or ""), str(res.get("group") or ""), str(res.get("resource") or ""),
                           str(res.get("subresource") or ""), str(res.get("namespace") or ""), str(res.get("name") or ""))
        elif isinstance(nonres, dict):
            a = Attributes(str(nonres.get("verb") or ""), path=str(nonres.get("path") or ""), resource_request=False)
        else:
            raise ApiError.invalid(body.get("kind") or "SelfSubjectAccessReview", "", [
                ("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or "
                                            "resourceAttributes must be specified")])
        decision = self.authorize(subject, a)
        status: Obj = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return {"kind": "SubjectAccessReview" if kind == "subjectaccessreviews" else "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": None},
                "spec": spec, "status": status}
