"""The sandbox's Kubernetes REST API over HTTP/1.1 (stdlib server, one thread per connection).

Serves discovery, CRUD, the three patch types, watch (chunked NDJSON), server-side Tables, `/log`,
`/status` and `/scale`, with `Status` objects for every error, plus raw routes for the runtime
(metrics, service discovery), health checks, the fault switch and the request audit.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes.client import ApiClient
from pydantic import ValidationError

from k8s_runbooks.sandbox.protobuf_wire import pb_fields, pb_object_meta
from k8s_runbooks.sandbox import podlogs, probes
from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.faults import Audit, FaultSwitch
from k8s_runbooks.sandbox.patches import apply_patch
from k8s_runbooks.sandbox.rbac_authz import REVIEW_RESOURCES, Attributes, Authorizer, load_signing_key
from k8s_runbooks.sandbox.resources import RESOURCES, Resource
from k8s_runbooks.sandbox.selectors import parse_field_selector, parse_label_selector
from k8s_runbooks.sandbox.store import Store
from k8s_runbooks.sandbox.tables import to_table

log = logging.getLogger("k8s_runbooks.sandbox.apiserver")

Obj = dict[str, Any]
Query = dict[str, list[str]]
RawRoute = Callable[[Query], tuple[int, str, bytes]]

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-sandbox", "gitCommit": "sandbox",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
                "compiler": "gc", "platform": "linux/amd64"}
_CATEGORY_ALL = {"pods", "services", "deployments", "replicasets"}
_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"], "log": ["get"],
              "token": ["create"]}
_MODEL = {"pods": ("V1Pod", "V1PodSpec"), "deployments": ("V1Deployment", "V1DeploymentSpec"),
          "replicasets": ("V1ReplicaSet", "V1ReplicaSetSpec")}
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_API_CLIENT = ApiClient()
# Kinds whose DELETE answers the deleted object, not a Status (the registry's ReturnDeletedObject; the official
# client deserialises these answers as the kind itself).
_RETURNS_DELETED = {"pods", "services", "resourcequotas", "serviceaccounts", "persistentvolumeclaims",
                    "persistentvolumes", "storageclasses"}


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _q(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


# ============================================================================ defaulting and validation
def _normalise_spec(res: Resource, obj: Obj) -> None:
    """Round-trip `.spec` through the official model: right types, unknown fields dropped (as a real server)."""
    model, _ = _MODEL[res.plural]
    try:
        built = _API_CLIENT._ApiClient__deserialize({"spec": obj.get("spec") or {}}, model)  # type: ignore[attr-defined]
    except (ValidationError, ValueError, TypeError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApiError.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                   f"{where + ': ' if where else ''}{first.get('msg')}") from None
    obj["spec"] = _omit_empty(_API_CLIENT.sanitize_for_serialization(built).get("spec") or {})


def _omit_empty(value: Any) -> Any:
    """Go's `omitempty`: empty lists (and an empty nodeSelector map) are not stored, so a template whose last env
    var was patched away is the same template as before it was added (same pod-template-hash)."""
    if isinstance(value, dict):
        return {k: _omit_empty(v) for k, v in value.items()
                if not (isinstance(v, list) and not v) and not (k == "nodeSelector" and not v)}
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        image = str(c.get("image") or "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
        c.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        resources = c.setdefault("resources", {})
        if resources.get("limits"):
            requests = resources.setdefault("requests", {})
            for k, v in resources["limits"].items():
                requests.setdefault(k, v)
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
        probes.apply_defaults(c)
        for e in c.get("env") or []:
            field_ref = (e.get("valueFrom") or {}).get("fieldRef")
            if field_ref is not None:
                field_ref.setdefault("apiVersion", "v1")


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers") or []
    res = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    guaranteed = all(
        all(k in (r.get("limits") or {}) for k in ("cpu", "memory"))
        and all((r.get("requests") or {}).get(k, v) == v for k, v in (r.get("limits") or {}).items())
        for r in res
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _validate_pod_spec(kind: str, name: str, spec: Obj, prefix: str) -> None:
    causes: list[tuple[str, str]] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append((f"{prefix}.containers", "Required value"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cname = c.get("name") or ""
        if not cname:
            causes.append((f"{prefix}.containers[{i}].name", "Required value"))
        elif not _DNS1123_LABEL.match(cname) or len(cname) > 63:
            causes.append((f"{prefix}.containers[{i}].name", f'Invalid value: "{cname}": a lowercase RFC 1123 label '
                           "must consist of lower case alphanumeric characters or '-', and must start and end with "
                           "an alphanumeric character"))
        elif cname in seen:
            causes.append((f"{prefix}.containers[{i}].name", f'Duplicate value: "{cname}"'))
        seen.add(cname)
        if not c.get("image"):
            causes.append((f"{prefix}.containers[{i}].image", "Required value"))
    if spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
        causes.append((f"{prefix}.restartPolicy", f'Unsupported value: "{spec["restartPolicy"]}": supported values: '
                       '"Always", "OnFailure", "Never"'))
    if causes:
        raise ApiError.invalid(kind, name, causes)


def _selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector as the query-string form (`app=x,tier in (a,b)`)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(op, ""))
    return ",".join(p for p in parts if p)


def _go_map(labels: dict[str, str]) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"


def admit(res: Resource, obj: Obj, old: Obj | None = None) -> Obj:
    """Defaulting and validation of pods and workloads on create (old=None) and update."""
    if res.plural not in _MODEL:
        return obj
    name = obj.get("metadata", {}).get("name", "")
    kind = res.kind if not res.group else f"{res.kind}.{res.group}"
    _normalise_spec(res, obj)
    spec = obj["spec"]
    if res.plural == "pods":
        _default_pod_spec(spec)
        _validate_pod_spec(kind, name, spec, "spec")
        if old is None:
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        else:
            _check_pod_update(kind, name, old.get("spec") or {}, spec)
        return obj
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if res.plural == "deployments":
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
    else:
        spec.pop("revisionHistoryLimit", None)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    _default_pod_spec(template.setdefault("spec", {}))
    causes: list[tuple[str, str]] = []
    if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
        causes.append(("spec.replicas", f"Invalid value: {spec['replicas']}: must be greater than or equal to 0"))
    selector = spec.get("selector")
    labels = template["metadata"].get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(("spec.selector", "Required value"))
    elif not _selector_matches(selector, labels):
        causes.append(("spec.template.metadata.labels",
                       f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`"))
    if old is not None and old.get("spec", {}).get("selector") != selector:
        causes.append(("spec.selector", f"Invalid value: {json.dumps(selector)}: field is immutable"))
    if causes:
        raise ApiError.invalid(kind, name, causes)
    _validate_pod_spec(kind, name, template["spec"], "spec.template.spec")
    if old is None:
        obj.setdefault("status", {})
    return obj


def _check_pod_update(kind: str, name: str, old: Obj, new: Obj) -> None:
    def strip(spec: Obj) -> Obj:
        out = json.loads(json.dumps(spec))
        for c in (out.get("containers") or []) + (out.get("initContainers") or []):
            c.pop("image", None)
        for k in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            out.pop(k, None)
        return out
    if strip(old) != strip(new):
        raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: spec: Forbidden: pod updates may not change '
                       "fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
                       "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
                       "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                       {"name": name, "kind": kind.split(".")[0],
                        "causes": [{"reason": "FieldValueForbidden", "message": "Forbidden: pod updates may not "
                                    "change fields other than the images", "field": "spec"}]})


def _check_type(res: Resource, obj: Any) -> Obj:
    if not isinstance(obj, dict):
        raise ApiError.bad_request(f"the body of the request must be a JSON object describing a {res.kind}")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind and kind != res.kind:
        raise ApiError.bad_request(f"the kind in the body ({kind}) does not match the expected kind ({res.kind}) "
                                   f"of the resource {res.plural}")
    if api_version and api_version != res.api_version:
        raise ApiError.bad_request(f'the API version in the data ({api_version}) does not match the expected API '
                                   f"version ({res.api_version})")
    if not isinstance(obj.get("metadata", {}), dict):
        raise ApiError.bad_request("metadata must be an object")
    return obj


# ============================================================================ protobuf bodies
_PROTOBUF = "application/vnd.kubernetes.protobuf"


def decode_protobuf(res: Resource, body: bytes) -> Obj:
    """kubectl's typed clients (`kubectl create namespace|deployment|service`) send protobuf bodies.

    The sandbox decodes the kinds whose message is small enough to read without the generated schema
    (Namespace: name, labels, annotations; and the configuration kinds of protobuf_kinds.py) and answers 415
    for the others, as a real server does for a media type it cannot decode."""
    from k8s_runbooks.sandbox import protobuf_kinds  # lazy: only kubectl's typed clients send protobuf

    if res.plural == "selfsubjectaccessreviews" and body.startswith(b"k8s\x00"):
        return _decode_ssar(body)  # `kubectl auth can-i`
    if res.plural in protobuf_kinds.KINDS and body.startswith(b"k8s\x00"):
        try:
            return protobuf_kinds.decode(res.plural, dict(pb_fields(body[4:])).get(2, b""))
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None
    if res.plural != "namespaces" or not body.startswith(b"k8s\x00"):
        raise ApiError(415, "UnsupportedMediaType",
                       f"the sandbox API cannot decode {_PROTOBUF} bodies for {res.plural}; send JSON "
                       "(kubectl apply -f / kubectl create -f, or the Python client)")
    try:
        unknown = dict(pb_fields(body[4:]))
        namespace = dict(pb_fields(unknown.get(2, b"")))
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": pb_object_meta(namespace.get(1, b""))}
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None


def _decode_ssar(body: bytes) -> Obj:
    """`kubectl auth can-i` sends its SelfSubjectAccessReview as protobuf: spec (2) → resourceAttributes (1:
    namespace, verb, group, version, resource, subresource, name) or nonResourceAttributes (2: path, verb)."""
    try:
        review = dict(pb_fields(dict(pb_fields(body[4:])).get(2, b"")))
        spec = dict(pb_fields(review.get(2, b"")))
        out: Obj = {}
        if 1 in spec:
            names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
            out["resourceAttributes"] = {names[n - 1]: v.decode() for n, v in pb_fields(spec[1]) if 1 <= n <= 7}
        if 2 in spec:
            out["nonResourceAttributes"] = {("path", "verb")[n - 1]: v.decode() for n, v in pb_fields(spec[2]) if n in (1, 2)}
        return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": out}
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None


# ============================================================================ discovery documents
def _resource_list(group: str) -> Obj:
    entries: list[Obj] = []
    for res in RESOURCES.values():
        if res.group != group:
            continue
        entry: Obj = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                      "kind": res.kind, "verbs": list(res.verbs), "storageVersionHash": ""}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.plural in _CATEGORY_ALL:
            entry["categories"] = ["all"]
        entries.append(entry)
        for sub in res.subresources:
            sub_entry: Obj = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                              "kind": res.kind, "verbs": _SUB_VERBS.get(sub, ["get"])}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1", kind="Scale")
            entries.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1" if group else "v1",
            "resources": entries}


def _openapi_paths() -> Obj:
    return {"paths": {("api/v1" if not g else f"apis/{g}/v1"): {
        "serverRelativeURL": f"/openapi/v3/{'api/v1' if not g else f'apis/{g}/v1'}?hash=sandbox"}
        for g in [""] + _groups()}}


def _openapi_group_version(group: str) -> Obj:
    """A minimal OpenAPI v3 document: just enough for kubectl to see that the server validates fields itself
    (`fieldValidation` on PATCH), so it skips client-side schema validation and builds apply patches from its
    built-in types."""
    paths: Obj = {}
    for res in RESOURCES.values():
        if res.group != group:
            continue
        prefix = f"/apis/{group}/v1" if group else "/api/v1"
        item = f"{prefix}/namespaces/{{namespace}}/{res.plural}/{{name}}" if res.namespaced else f"{prefix}/{res.plural}/{{name}}"
        paths[item] = {"patch": {
            "operationId": f"patch{res.kind}",
            "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": res.kind},
            "x-kubernetes-action": "patch",
            "parameters": [{"name": name, "in": "query", "schema": {"type": "string"}}
                           for name in ("dryRun", "fieldManager", "fieldValidation", "force")],
            "responses": {"200": {"description": "OK"}},
        }}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (k8s-runbooks sandbox)", "version": "v1.37.0"},
            "paths": paths, "components": {"schemas": {}}}


def _groups() -> list[str]:
    return sorted({r.group for r in RESOURCES.values() if r.group})


def _api_group(group: str) -> Obj:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [version], "preferredVersion": version}


# ============================================================================ pagination
def _encode_continue(offset: int, rv: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "rv": rv}).encode()).decode().rstrip("=")


def _decode_continue(token: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(data["o"])
        if offset < 0:
            raise ValueError
        return offset
    except (binascii.Error, ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise ApiError.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                   "(version meta.k8s.io/v1)") from None


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas") or 0)},
            "status": {"replicas": int((obj.get("status") or {}).get("replicas") or 0),
                       "selector": selector_string((obj.get("spec") or {}).get("selector"))}}


# ============================================================================ routing
class Route:
    """A parsed Kubernetes API path."""

    def __init__(self, res: Resource, namespace: str | None, name: str | None, sub: str | None) -> None:
        self.res, self.namespace, self.name, self.sub = res, namespace, name, sub


def _find_resource(group: str, plural: str) -> Resource:
    res = RESOURCES.get(plural)
    if res is None or res.group != group:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return res


def parse_api_path(parts: list[str]) -> Route | Obj:
    """Return a discovery document or the Route of a resource request. Raises 404 for the rest."""
    not_found = ApiError(404, "NotFound", "the server could not find the requested resource")
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(g) for g in _groups()]}
    if parts[0] == "api":
        group, rest = "", parts[2:]
        if parts[1] != "v1":
            raise not_found
    else:
        group = parts[1]
        if group not in _groups():
            raise not_found
        if len(parts) == 2:
            return _api_group(group)
        if parts[2] != "v1":
            raise not_found
        rest = parts[3:]
    if not rest:
        return _resource_list(group)
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in RESOURCES and RESOURCES[rest[2]].group == group:
        namespace, rest = rest[1], rest[2:]
    res = _find_resource(group, rest[0])
    if namespace is not None and not res.namespaced:
        raise not_found
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if len(rest) > 3 or (sub is not None and sub not in res.subresources):
        raise not_found
    return Route(res, namespace, name, sub)


# ============================================================================ the server
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    api: "ApiServer"


class ApiServer:
    """The HTTP front of a `Store`. `start()` serves in a daemon thread; `stop()` shuts it down."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0, *, state_dir: Path | None = None) -> None:
        self.store = store
        self.state_dir = Path(state_dir) if state_dir else None
        self.faults = FaultSwitch()
        self.audit = Audit()
        self.authz = Authorizer(store, load_signing_key(self.state_dir))
        self._raw_routes: dict[str, RawRoute] = {}
        self._stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler)  # raises OSError(EADDRINUSE) if taken
        self._httpd.api = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}"

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def add_raw_route(self, path: str, fn: RawRoute) -> None:
        """Serve `fn(query) -> (status, content_type, body)` at `path` (GET only)."""
        self._raw_routes[path.rstrip("/") or "/"] = fn

    def raw_route(self, path: str) -> RawRoute | None:
        return self._raw_routes.get(path.rstrip("/") or "/")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sandbox-apiserver", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed-ACK stalls
    server: _Server
    server_version = "k8s-runbooks-sandbox"
    sys_version = ""

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s " + format, self.address_string(), *args)

    @property
    def api(self) -> ApiServer:
        return self.server.api

    @property
    def store(self) -> Store:
        return self.server.api.store

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self, body: bytes, *, required: bool = True) -> Any:
        if not body.strip():
            if required:
                raise ApiError.bad_request("the request body is empty")
            return None
        ctype = (self.headers.get("Content-Type") or "").lower()
        if ctype.startswith(_PROTOBUF):
            raise ApiError(415, "UnsupportedMediaType", f"the sandbox API accepts JSON bodies only, not {_PROTOBUF}")
        try:
            if "yaml" in ctype:
                return yaml.safe_load(body)
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {exc}") from None

    def _send_bytes(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(code, "application/json", json.dumps(obj, separators=(",", ":")).encode(), headers)

    def _send_error(self, err: ApiError) -> None:
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
        self._send_json(err.code, err.status(), headers)

    def _start_chunked(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_chunked(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wants_table(self) -> bool:
        accept = self.headers.get("Accept") or ""
        return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            if path.startswith("/sandbox/"):
                self._sandbox(method, path, body)
            elif path in ("/healthz", "/readyz", "/livez"):
                self._send_bytes(200, "text/plain; charset=utf-8", b"ok")
            elif self.api.raw_route(path) is not None:
                if method != "GET":
                    raise ApiError.method_not_allowed()
                code, ctype, payload = self.api.raw_route(path)(query)  # type: ignore[misc]
                self._send_bytes(code, ctype, payload)
            else:
                decision = self.api.faults.decide(method, path)
                if decision.latency_s:
                    time.sleep(decision.latency_s)
                if decision.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if decision.error is not None:
                    raise decision.error
                if decision.drop_response:
                    return self._serve_then_drop(method, path, query, body)
                self._kube(method, path, query, body)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - a bug must become a 500 Status, never a traceback to the client
            log.exception("internal error serving %s %s", method, self.path)
            try:
                self._send_error(ApiError(500, "InternalError", "an internal error occurred in the sandbox API"))
            except OSError:
                self.close_connection = True

    def _serve_then_drop(self, method: str, path: str, query: Query, body: bytes) -> None:
        """Fault `drop_phase: response`: apply the request, discard the answer, close the connection."""
        real = self.wfile
        self.wfile = io.BytesIO()  # type: ignore[assignment]
        try:
            self._kube(method, path, query, body)
        except ApiError:
            pass
        finally:
            self.wfile = real
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _sandbox(self, method: str, path: str, body: bytes) -> None:
        if path == "/sandbox/faults/injected":
            if method == "GET":
                return self._send_json(200, {"injected": self.api.faults.injected()})
            if method == "DELETE":
                self.api.faults.reset_injected()
                return self._send_json(200, {"injected": {}})
            raise ApiError.method_not_allowed()
        if path == "/sandbox/faults":
            if method == "GET":
                return self._send_json(200, {"fault": self.api.faults.current()})
            if method in ("POST", "PUT"):
                self.api.faults.set(self._json_body(body))
                return self._send_json(200, {"fault": self.api.faults.current()})
            if method == "DELETE":
                self.api.faults.clear()
                return self._send_json(200, {"fault": None})
            raise ApiError.method_not_allowed()
        if path == "/sandbox/audit":
            if method == "GET":
                return self._send_json(200, self.api.audit.to_json())
            if method == "DELETE":
                self.api.audit.reset()
                return self._send_json(200, {"requests": []})
            raise ApiError.method_not_allowed()
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _kube(self, method: str, path: str, query: Query, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        if path == "/version" or path.startswith("/openapi"):
            self.api.authz.admit(self.headers, Attributes(method.lower(), path=path, resource_request=False))
        if path == "/version":
            return self._send_json(200, KUBE_VERSION)
        if path == "/openapi/v3" and method == "GET":
            return self._send_json(200, _openapi_paths())
        if path.startswith("/openapi/v3/") and method == "GET":
            group = parts[3] if parts[2] == "apis" and len(parts) == 5 else ""
            if path not in ("/openapi/v3/api/v1", f"/openapi/v3/apis/{group}/v1") or (group and group not in _groups()):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send_json(200, _openapi_group_version(group))
        if not parts or parts[0] not in ("api", "apis") or (parts[0] == "api" and len(parts) == 1 and method != "GET"):
            self.api.authz.admit(self.headers, Attributes(method.lower(), path=path, resource_request=False))
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[0] == "api" and len(parts) > 1 and parts[1] != "v1":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        target = parse_api_path(parts)
        if not isinstance(target, Route):
            self.api.authz.admit(self.headers, Attributes(method.lower(), path=path, resource_request=False))
            if method != "GET":
                raise ApiError.method_not_allowed()
            return self._send_json(200, target)
        self._resource(method, target, query, body)

    # ------------------------------------------------------------------ resources
    def _audit(self, method: str, route: Route, query: Query, user: str = "") -> None:
        if method == "GET":
            verb = "watch" if _truthy(_q(query, "watch")) else ("get" if route.name else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        self.api.audit.record(verb, route.res.plural, route.sub, route.namespace, group=route.res.group, user=user)

    def _authorize(self, method: str, route: Route, query: Query, user: Any) -> Any:
        if method == "GET":
            verb = "watch" if _truthy(_q(query, "watch")) else ("get" if route.name else "list")
        elif method == "DELETE" and not route.name:
            verb = "deletecollection"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
        return self.api.authz.check(user, Attributes(verb, route.res.group, route.res.plural, route.sub or "",
                                                     route.namespace or "", route.name or ""))

    def _resource(self, method: str, route: Route, query: Query, body: bytes) -> None:
        res = route.res
        user = self.api.authz.identify(self.headers)
        self._audit(method, route, query, user.name)  # denied requests too: the least-privilege record shows them
        self._authorize(method, route, query, user)
        if res.plural in REVIEW_RESOURCES or route.sub == "token":
            if method != "POST":
                raise ApiError.method_not_allowed()
            protobuf = (self.headers.get("Content-Type") or "").startswith(_PROTOBUF)
            return self._send_json(201, self._identity(user, route, decode_protobuf(res, body) if protobuf
                                                       else self._json_body(body)))
        if route.sub == "log":
            if method != "GET":
                raise ApiError.method_not_allowed()
            return self._logs(route, query)
        if route.sub == "scale":
            return self._scale(method, route, body)
        if route.name is None:
            if method == "GET":
                return self._list_or_watch(route, query, None)
            if method == "POST":
                return self._create(route, query, body)
            raise ApiError.method_not_allowed()
        if method == "GET":
            if _truthy(_q(query, "watch")):
                return self._list_or_watch(route, query, route.name)
            obj = self.store.get(res.plural, route.namespace, route.name)
            if self._wants_table():
                return self._send_json(200, to_table(res.plural, [obj], resource_version=obj["metadata"]["resourceVersion"],
                                                     include_object=_q(query, "includeObject") or "Metadata"))
            return self._send_json(200, obj)
        if method == "PUT":
            return self._replace(route, query, body)
        if method == "PATCH":
            return self._patch(route, query, body)
        if method == "DELETE":
            return self._delete(route, query, body)
        raise ApiError.method_not_allowed()

    def _identity(self, user: Any, route: Route, body: Any) -> Obj:
        """TokenRequest (`serviceaccounts/NAME/token`) and the access reviews (`kubectl auth can-i`)."""
        if route.sub == "token":
            spec = (body or {}).get("spec") or {}
            token, exp = self.api.authz.issue_token(route.namespace or "", route.name or "",
                                                    int(spec.get("expirationSeconds") or 3600), spec.get("audiences"))
            return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"name": route.name, "namespace": route.namespace}, "spec": spec,
                    "status": {"token": token, "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}}
        return self.api.authz.review(user, route.res.plural, body)

    def _create(self, route: Route, query: Query, body: bytes) -> None:
        res = route.res
        if (self.headers.get("Content-Type") or "").startswith(_PROTOBUF):
            obj = decode_protobuf(res, body)
        else:
            obj = _check_type(res, self._json_body(body))
        meta = obj.setdefault("metadata", {})
        if route.namespace and meta.get("namespace") and meta["namespace"] != route.namespace:
            raise ApiError.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if route.namespace:
            meta["namespace"] = route.namespace
        obj = admit(res, obj)
        if _q(query, "dryRun"):
            obj["apiVersion"], obj["kind"] = res.api_version, res.kind
            return self._send_json(201, obj)
        self._send_json(201, self.store.create(res.plural, obj, route.namespace))

    def _replace(self, route: Route, query: Query, body: bytes) -> None:
        res = route.res
        obj = _check_type(res, self._json_body(body))
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != route.name:
            raise ApiError.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                       f"({route.name})")
        if route.namespace and meta.get("namespace") and meta["namespace"] != route.namespace:
            raise ApiError.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["name"] = route.name
        if route.namespace:
            meta["namespace"] = route.namespace
        cur = self.store.get(res.plural, route.namespace, route.name)
        self._send_json(200, self._write(route, obj, cur, dry_run=bool(_q(query, "dryRun"))))

    def _write(self, route: Route, obj: Obj, cur: Obj, *, dry_run: bool) -> Obj:
        res = route.res
        if route.sub == "status":
            if dry_run:
                return {**cur, "status": obj.get("status", {})}
            return self.store.replace(res.plural, obj, subresource="status")
        obj = admit(res, obj, old=cur)
        if dry_run:
            sent_rv = obj["metadata"].get("resourceVersion")
            if sent_rv and sent_rv != cur["metadata"]["resourceVersion"]:
                raise ApiError.conflict(res.plural, route.name or "", res.group)
            return {**cur, **{k: v for k, v in obj.items() if k not in ("metadata", "status")}}
        return self.store.replace(res.plural, obj)

    def _patch(self, route: Route, query: Query, body: bytes) -> None:
        res = route.res
        patch = self._json_body(body)
        ctype = self.headers.get("Content-Type") or ""
        for _attempt in range(5):
            cur = self.store.get(res.plural, route.namespace, route.name or "")
            patched = apply_patch(ctype, cur, patch)
            patched = _check_type(res, patched)
            meta = patched.setdefault("metadata", {})
            if meta.get("name") != route.name or (res.namespaced and meta.get("namespace") != route.namespace):
                raise ApiError.bad_request("metadata.name and metadata.namespace cannot be changed by a patch")
            # The patched copy carries the current resourceVersion unless the patch itself set one.
            user_rv = meta.get("resourceVersion") != cur["metadata"]["resourceVersion"]
            try:
                return self._send_json(200, self._write(route, patched, cur, dry_run=bool(_q(query, "dryRun"))))
            except ApiError as err:
                # A real server retries a patch without a resourceVersion precondition on conflicts.
                if err.reason != "Conflict" or user_rv:
                    raise
        raise ApiError.conflict(res.plural, route.name or "", res.group)

    def _delete(self, route: Route, query: Query, body: bytes) -> None:
        res = route.res
        options = self._json_body(body, required=False) or {}
        if not isinstance(options, dict):
            raise ApiError.bad_request("DeleteOptions must be a JSON object")
        grace_text = _q(query, "gracePeriodSeconds")
        grace = options.get("gracePeriodSeconds")
        try:
            if grace_text is not None:
                grace = int(grace_text)
            grace = None if grace is None else int(grace)
        except (TypeError, ValueError):
            raise ApiError.bad_request("gracePeriodSeconds must be an integer") from None
        policy = options.get("propagationPolicy") or _q(query, "propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError.bad_request(f'unsupported propagationPolicy "{policy}"')
        cur = self.store.get(res.plural, route.namespace, route.name or "")
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]) or \
                (pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{route.name}": '
                           "Precondition failed")
        if _q(query, "dryRun") or options.get("dryRun"):
            return self._send_json(200, cur)
        result = self.store.delete(res.plural, route.namespace, route.name or "", grace_seconds=grace)
        if res.plural in _RETURNS_DELETED or result["metadata"].get("deletionTimestamp"):
            return self._send_json(200, result)
        details = {"name": route.name, "kind": res.plural, "uid": cur["metadata"]["uid"]}
        if res.group:
            details["group"] = res.group
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": details})

    def _scale(self, method: str, route: Route, body: bytes) -> None:
        res = route.res
        cur = self.store.get(res.plural, route.namespace, route.name or "")
        if method == "GET":
            return self._send_json(200, _scale_of(cur))
        if method == "PUT":
            scale = self._json_body(body)
        elif method == "PATCH":
            scale = apply_patch(self.headers.get("Content-Type") or "", _scale_of(cur), self._json_body(body))
        else:
            raise ApiError.method_not_allowed()
        if not isinstance(scale, dict) or not isinstance(scale.get("spec", {}), dict):
            raise ApiError.bad_request("the body must be an autoscaling/v1 Scale")
        replicas = scale.get("spec", {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError.invalid("Scale.autoscaling", route.name or "",
                                   [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")])
        new = dict(cur)
        new["spec"] = {**(cur.get("spec") or {}), "replicas": replicas}
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"] = {**cur["metadata"], "resourceVersion": rv or cur["metadata"]["resourceVersion"]}
        self._send_json(200, _scale_of(self.store.replace(res.plural, new)))

    # ------------------------------------------------------------------ list and watch
    def _list_or_watch(self, route: Route, query: Query, name: str | None) -> None:
        res = route.res
        label_selector = _q(query, "labelSelector")
        field_selector = _q(query, "fieldSelector")
        if name:
            field_selector = ",".join(s for s in (field_selector, f"metadata.name={name}") if s)
        # Parse first so a bad selector is a 400 before any watch stream starts.
        parse_label_selector(label_selector)
        parse_field_selector(field_selector, res.plural)
        table = self._wants_table()
        include = _q(query, "includeObject") or "Metadata"
        if _truthy(_q(query, "watch")):
            return self._watch(route, query, label_selector, field_selector, table, include)
        offset = _decode_continue(_q(query, "continue") or "") if _q(query, "continue") else 0
        limit_text = _q(query, "limit")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise ApiError.bad_request(f"invalid limit: {limit_text!r}") from None
        page, rv, total = self.store.list_page(res.plural, route.namespace, label_selector, field_selector,
                                               offset=offset, limit=max(limit, 0))
        next_token, remaining = None, None
        if limit > 0 and offset + limit < total:
            next_token = _encode_continue(offset + limit, rv)
            remaining = total - offset - limit
        if table:
            return self._send_json(200, to_table(res.plural, page, resource_version=str(rv), include_object=include,
                                                 continue_token=next_token, remaining=remaining))
        for item in page:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        meta: Obj = {"resourceVersion": str(rv)}
        if next_token:
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta,
                              "items": page})

    def _watch(self, route: Route, query: Query, label_selector: str | None, field_selector: str | None,
               table: bool, include: str) -> None:
        res = route.res
        rv_text = _q(query, "resourceVersion")
        try:
            start = None if rv_text in (None, "", "0") else int(rv_text)  # type: ignore[arg-type]
            timeout = float(_q(query, "timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError.bad_request(f"invalid resourceVersion or timeoutSeconds: {rv_text!r}") from None
        bookmarks = _truthy(_q(query, "allowWatchBookmarks"))

        def encode(type_: str, obj: Obj) -> bytes:
            if table and type_ in ("ADDED", "MODIFIED", "DELETED"):
                obj = to_table(res.plural, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                               include_object=include)
            return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"

        # Streaming lists (client-go's WatchList, used by kubectl rollout status): the current state as ADDED
        # events, then a bookmark annotated k8s.io/initial-events-end, then the changes.
        initial_events = _truthy(_q(query, "sendInitialEvents"))
        cut_after = self.api.faults.watch_deadline(urlsplit(self.path).path)
        self._start_chunked("application/json")
        last_rv = start or 0
        try:
            if start is None or initial_events:
                items, list_rv = self.store.list(res.plural, route.namespace, label_selector, field_selector)
                for item in items:
                    self._chunk(encode("ADDED", item))
                start = last_rv = list_rv
                if initial_events:
                    self._chunk(encode("BOOKMARK", {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(list_rv),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}))
            last_bookmark = time.monotonic()
            if cut_after is not None and cut_after < timeout:
                timeout = cut_after
            else:
                cut_after = None  # the client's own timeout comes first: end the stream cleanly
            events = self.store.watch(res.plural, route.namespace, start, label_selector=label_selector,
                                      field_selector=field_selector, timeout=timeout, stop=self.api.stopping)
            for event in events:
                if event is None:
                    if self._client_gone():
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= 2:
                        last_bookmark = time.monotonic()
                        self._chunk(encode("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                        "metadata": {"resourceVersion": str(last_rv)}}))
                    continue
                last_rv = event.resource_version
                self._chunk(encode(event.type, event.object))
        except ApiError as err:
            self._chunk(json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n")
        except OSError:
            self.close_connection = True
            return
        if cut_after is not None and not self.api.stopping.is_set() and not self._client_gone():
            # Fault: the stream is cut mid-way (no final chunk), as a dying API server or proxy would.
            self.api.faults.watch_cut()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._end_chunked()

    # ------------------------------------------------------------------ logs
    def _logs(self, route: Route, query: Query) -> None:
        pod = self.store.get("pods", route.namespace, route.name or "")
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        container = _q(query, "container")
        if not container:
            default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if default in names:
                container = default
            elif len(names) == 1:
                container = names[0]
            else:
                raise ApiError.bad_request(f"a container name must be specified for pod {route.name}, choose one of: "
                                           f"[{' '.join(names)}]")
        if container not in names + init_names:
            raise ApiError.bad_request(f"container {container} is not valid for pod {route.name}")
        statuses = {cs.get("name"): cs for cs in (status.get("containerStatuses") or [])
                    + (status.get("initContainerStatuses") or [])}
        cs = statuses.get(container)
        restart = int((cs or {}).get("restartCount") or 0)
        previous = _truthy(_q(query, "previous"))
        if self.api.state_dir is None:
            raise ApiError.bad_request("this sandbox API keeps no pod logs (started without a state dir)")
        uid, ns = pod["metadata"]["uid"], pod["metadata"]["namespace"]
        index = restart - 1 if previous else restart
        path = podlogs.container_log_path(self.api.state_dir, ns, route.name or "", uid, container, max(index, 0))
        if previous and (index < 0 or not path.exists()):
            raise ApiError.bad_request(f'previous terminated container "{container}" in pod "{route.name}" not found')
        if not previous and not path.exists():
            waiting = ((cs or {}).get("state") or {}).get("waiting")
            if cs is None or waiting:
                reason = (waiting or {}).get("reason") or "ContainerCreating"
                raise ApiError.bad_request(f'container "{container}" in pod "{route.name}" is waiting to start: {reason}')
        try:
            tail = int(_q(query, "tailLines")) if _q(query, "tailLines") is not None else None  # type: ignore[arg-type]
            since_s = int(_q(query, "sinceSeconds")) if _q(query, "sinceSeconds") else None  # type: ignore[arg-type]
            limit = int(_q(query, "limitBytes")) if _q(query, "limitBytes") else None  # type: ignore[arg-type]
        except ValueError:
            raise ApiError.bad_request("tailLines, sinceSeconds and limitBytes must be integers") from None
        cutoff = None
        if since_s is not None:
            cutoff = datetime.now(timezone.utc) - timedelta(seconds=since_s)
        elif _q(query, "sinceTime"):
            try:
                cutoff = datetime.strptime((_q(query, "sinceTime") or "")[:19], "%Y-%m-%dT%H:%M:%S").replace(
                    tzinfo=timezone.utc)
            except ValueError:
                raise ApiError.bad_request("sinceTime must be an RFC3339 timestamp") from None
        stamps = _truthy(_q(query, "timestamps"))

        def render(entry: tuple[datetime, str, str]) -> bytes:
            when, _stream, text = entry
            prefix = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z " if stamps else ""
            return (prefix + text + "\n").encode()

        lines = [e for e in podlogs.read_lines(path) if cutoff is None or e[0] >= cutoff]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        data = b"".join(render(e) for e in lines)
        if limit is not None:
            data = data[:limit]
        if not _truthy(_q(query, "follow")) or previous:
            return self._send_bytes(200, "text/plain", data)
        self._follow(route, container, uid, restart, path, data, render, limit)

    def _follow(self, route: Route, container: str, uid: str, restart: int, path: Path, initial: bytes,
                render: Callable[[tuple[datetime, str, str]], bytes], limit: int | None) -> None:
        self._start_chunked("text/plain")
        sent = len(initial)
        try:
            self._chunk(initial)
            offset = path.stat().st_size if path.exists() else 0
            buffer = b""
            while not self.api.stopping.is_set():
                chunk = b""
                if path.exists():
                    with open(path, "rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read()
                    offset += len(chunk)
                if chunk:
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    out = b""
                    for raw in complete:
                        try:
                            out += render(podlogs.parse_line(raw.decode("utf-8", "replace")))
                        except ValueError:
                            continue
                    if limit is not None:
                        out = out[:max(limit - sent, 0)]
                    self._chunk(out)
                    sent += len(out)
                    if limit is not None and sent >= limit:
                        break
                    continue
                if self._client_gone() or not self._container_running(route, container, uid, restart):
                    break
                time.sleep(0.2)
        except OSError:
            self.close_connection = True
            return
        self._end_chunked()

    def _container_running(self, route: Route, container: str, uid: str, restart: int) -> bool:
        pod = self.store.try_get("pods", route.namespace, route.name or "")
        if pod is None or pod["metadata"]["uid"] != uid:
            return False
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == container:
                return int(cs.get("restartCount") or 0) == restart and "running" in (cs.get("state") or {})
        return False
