"""Protobuf bodies of the configuration kinds kubectl creates with its typed clients: `kubectl create secret
generic|docker-registry|tls`, `kubectl create configmap`, `kubectl create serviceaccount`, `kubectl create
quota`. Field numbers are those of k8s.io/api/core/v1/generated.proto."""

from __future__ import annotations

import base64
from typing import Any

from k8s_runbooks.sandbox.protobuf_wire import pb_fields as _pb_fields, pb_object_meta as _pb_object_meta

Obj = dict[str, Any]
KINDS = {"secrets": "Secret", "configmaps": "ConfigMap", "serviceaccounts": "ServiceAccount",
         "resourcequotas": "ResourceQuota"}


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    entry = dict(_pb_fields(buf))
    return entry.get(1, b"").decode(), entry.get(2, b"")


def _quantity(buf: bytes) -> str:
    return dict(_pb_fields(buf)).get(1, b"").decode()


def decode(plural: str, message: bytes) -> Obj:
    """The object inside a `k8s\\x00` Unknown envelope's raw bytes (already unwrapped by the caller)."""
    obj: Obj = {"apiVersion": "v1", "kind": KINDS[plural], "metadata": {}}
    for num, value in _pb_fields(message):
        if num == 1:
            obj["metadata"] = _pb_object_meta(value)
        elif plural == "secrets" and num == 2:
            k, v = _map_entry(value)
            obj.setdefault("data", {})[k] = base64.b64encode(v).decode()
        elif plural == "secrets" and num == 3:
            obj["type"] = value.decode()
        elif plural == "secrets" and num == 4:
            k, v = _map_entry(value)
            obj.setdefault("stringData", {})[k] = v.decode()
        elif plural == "configmaps" and num == 2:
            k, v = _map_entry(value)
            obj.setdefault("data", {})[k] = v.decode()
        elif plural == "configmaps" and num == 3:
            k, v = _map_entry(value)
            obj.setdefault("binaryData", {})[k] = base64.b64encode(v).decode()
        elif plural == "serviceaccounts" and num in (2, 3):
            ref = dict(_pb_fields(value))
            key = "secrets" if num == 2 else "imagePullSecrets"
            name_field = 3 if num == 2 else 1  # ObjectReference.name is field 3; LocalObjectReference.name is 1
            obj.setdefault(key, []).append({"name": ref.get(name_field, b"").decode()})
        elif plural == "resourcequotas" and num == 2:
            for snum, svalue in _pb_fields(value):
                if snum == 1:
                    k, v = _map_entry(svalue)
                    obj.setdefault("spec", {}).setdefault("hard", {})[k] = _quantity(v)
                elif snum == 2:
                    obj.setdefault("spec", {}).setdefault("scopes", []).append(svalue.decode())
    return obj
