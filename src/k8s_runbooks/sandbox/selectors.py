"""Label and field selectors with the grammar the real API server accepts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

Matcher = Callable[[Mapping[str, str]], bool]


def _split_top_level(expr: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, selector: str) -> None:
    if not _LABEL_KEY.match(key):
        raise ApiError.bad_request(f'unable to parse requirement: invalid label key "{key}" in selector "{selector}"')


def _check_value(value: str, selector: str) -> None:
    if not _LABEL_VALUE.match(value):
        raise ApiError.bad_request(f'unable to parse requirement: invalid label value "{value}" in selector "{selector}"')


_SET_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")


def parse_label_selector(selector: str | None) -> Matcher:
    """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k` into a predicate over a label map."""
    if not selector or not selector.strip():
        return lambda labels: True
    checks: list[Matcher] = []
    for req in _split_top_level(selector):
        m = _SET_RE.match(req)
        if m:
            key, op = m["key"], m["op"]
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            _check_key(key, selector)
            for v in values:
                _check_value(v, selector)
            if op == "in":
                checks.append(lambda l, k=key, vs=values: l.get(k) in vs)
            else:
                checks.append(lambda l, k=key, vs=values: l.get(k) not in vs)
            continue
        for op in ("!=", "==", "="):
            if op in req:
                key, value = (s.strip() for s in req.split(op, 1))
                _check_key(key, selector)
                _check_value(value, selector)
                if op == "!=":
                    checks.append(lambda l, k=key, v=value: l.get(k) != v)
                else:
                    checks.append(lambda l, k=key, v=value: l.get(k) == v)
                break
        else:
            if req.startswith("!"):
                key = req[1:].strip()
                _check_key(key, selector)
                checks.append(lambda l, k=key: k not in l)
            else:
                _check_key(req, selector)
                checks.append(lambda l, k=req: k in l)
    return lambda labels: all(c(labels) for c in checks)


def _field_value(obj: Mapping[str, Any], path: str) -> str | None:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if cur is None:
        return None
    return str(cur)


# Field paths the real server supports for these kinds (plus metadata.name/namespace everywhere).
SUPPORTED_FIELDS: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "status.phase", "status.podIP", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"},
    "namespaces": {"status.phase"},
    "replicasets": {"status.replicas"},
}


def parse_field_selector(selector: str | None, resource: str) -> Callable[[Mapping[str, Any]], bool]:
    if not selector or not selector.strip():
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | SUPPORTED_FIELDS.get(resource, set())
    checks = []
    for req in _split_top_level(selector):
        for op in ("!=", "==", "="):
            if op in req:
                path, value = (s.strip() for s in req.split(op, 1))
                break
        else:
            raise ApiError.bad_request(f'invalid field selector: "{req}": expected key=value')
        if path not in allowed:
            raise ApiError.bad_request(f'field label not supported: {path}')
        if path == "source":
            path = "source.component"
        neg = op == "!="
        checks.append(lambda o, p=path, v=value, n=neg: (_field_value(o, p) or "") != v if n else (_field_value(o, p) or "") == v)
    return lambda obj: all(c(obj) for c in checks)
