"""The three PATCH flavours of the Kubernetes API: JSON merge (RFC 7386), JSON patch (RFC 6902) and
strategic merge (lists of named things merged by key, as kubectl sends them)."""

from __future__ import annotations

import copy
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Lists merged element-wise in strategic merge patches (patchMergeKey of the core types).
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),  # container ports / service ports
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "containerStatuses": ("name",),
    "initContainerStatuses": ("name",),
}
# Primitive lists with the "merge" strategy (set union).
_SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ------------------------------------------------------------------------------------- RFC 6902
def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise ApiError.bad_request(f"invalid JSON pointer: {pointer!r}")
    return [_unescape(t) for t in pointer.split("/")[1:]] if pointer else []


def _list_index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise ApiError.bad_request(f"invalid array index: {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not for_add):
        raise ApiError(422, "Invalid", f"array index out of bounds: {idx}")
    return idx


def _resolve(doc: Any, tokens: list[str], pointer: str) -> Any:
    cur = doc
    for token in tokens:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_list_index(cur, token, for_add=False)]
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: {pointer}")
    return cur


def _add(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, for_add=True), copy.deepcopy(value))
    else:
        raise ApiError(422, "Invalid", f"doc is missing path: {pointer}")
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> Any:
    if not tokens:
        raise ApiError(422, "Invalid", "cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_list_index(parent, last, for_add=False)]
    else:
        raise ApiError(422, "Invalid", f"unable to remove nonexistent key: {last}: missing value")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a deep copy of `target`. Failing `test` ops and bad paths are 422, malformed ops 400."""
    if not isinstance(operations, list):
        raise ApiError.bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError.bad_request(f"invalid json patch operation: {op!r}")
        name, pointer = op["op"], op["path"]
        tokens = _split_pointer(pointer)
        if name in ("add", "replace", "test") and "value" not in op:
            raise ApiError.bad_request(f'json patch operation "{name}" needs a value')
        if name == "add":
            doc = _add(doc, tokens, op["value"], pointer)
        elif name == "remove":
            doc = _remove(doc, tokens, pointer)
        elif name == "replace":
            _resolve(doc, tokens, pointer)  # must exist
            if tokens:
                doc = _remove(doc, tokens, pointer)
            doc = _add(doc, tokens, op["value"], pointer)
        elif name in ("move", "copy"):
            from_tokens = _split_pointer(op.get("from"))
            value = copy.deepcopy(_resolve(doc, from_tokens, op.get("from", "")))
            if name == "move":
                doc = _remove(doc, from_tokens, op["from"])
            doc = _add(doc, tokens, value, pointer)
        elif name == "test":
            if _resolve(doc, tokens, pointer) != op["value"]:
                raise ApiError(422, "Invalid", f"testing value {pointer} failed")
        else:
            raise ApiError.bad_request(f"unexpected json patch operation: {name!r}")
    return doc


# ------------------------------------------------------------------------------------- strategic
def _merge_key(field: str, items: list[Any]) -> str | None:
    for key in _MERGE_KEYS.get(field, ()):
        if all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def _merge_list(field: str, current: Any, patch: list[Any], delete_primitives: list[Any]) -> list[Any]:
    cur = list(copy.deepcopy(current)) if isinstance(current, list) else []
    if field in _SET_LISTS:
        return [v for v in cur if v not in delete_primitives] + [v for v in patch if v not in cur]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    key = _merge_key(field, [i for i in patch if not (isinstance(i, dict) and i.get("$patch"))] or patch)
    if key is None:
        return [_strip_directives(copy.deepcopy(i)) for i in patch]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError.bad_request(f"map: {item!r} does not contain declared merge key: {key}")
        idx = next((n for n, c in enumerate(cur) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del cur[idx]
        elif idx is None:
            cur.append(_strip_directives(copy.deepcopy(item)))
        else:
            cur[idx] = strategic_merge_patch(cur[idx], item)
    return cur


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Apply `$setElementOrder`: listed elements in that order, then the rest as they were."""
    ident = (lambda i: i.get(key) if isinstance(i, dict) else i) if key else (lambda i: i)
    wanted = [ident(o) if isinstance(o, dict) else o for o in order]
    ranked = {v: n for n, v in enumerate(wanted) if isinstance(v, (str, int))}
    return sorted(items, key=lambda i: ranked.get(ident(i), len(ranked)))


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch good enough for kubectl (set env, set image, rollout restart, apply)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    if patch.get("$patch") == "delete":
        return {}
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    orders = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    deletes = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$deleteFromPrimitiveList/")}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, deletes.get(key, []))
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        else:
            result[key] = value
    for key, dels in deletes.items():
        if key not in patch and isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in dels]
    for key, order in orders.items():
        if isinstance(result.get(key), list) and isinstance(order, list):
            result[key] = _order(result[key], order, _merge_key(key, result[key]))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    base = content_type.split(";", 1)[0].strip().lower()
    if base == JSON_PATCH:
        return json_patch(target, patch)
    if base == MERGE_PATCH:
        return merge_patch(target, patch)
    if base == STRATEGIC_PATCH:
        return strategic_merge_patch(target, patch)
    raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types '
                   f'include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}')
