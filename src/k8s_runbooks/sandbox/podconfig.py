"""What the kubelet needs from Secrets and ConfigMaps before a container can start, with its messages.

- volumes (secret, configMap, projected): a missing object fails the mount, so the pod stays
  ContainerCreating with `FailedMount` events: `MountVolume.SetUp failed for volume "v" : secret "x" not found`;
- env (`valueFrom.secretKeyRef` / `configMapKeyRef`, `envFrom`): a missing object or key is
  `CreateContainerConfigError`: `secret "x" not found`, `couldn't find key K in Secret NS/x`.

`optional: true` references are skipped when missing, as the kubelet does.
"""

from __future__ import annotations

import base64
from typing import Any

Obj = dict[str, Any]
_KINDS = {"secret": ("secrets", "Secret"), "configmap": ("configmaps", "ConfigMap")}


class ConfigError(Exception):
    """The container cannot be configured (CreateContainerConfigError); str() is the kubelet's message."""


def _values(obj: Obj, kind: str) -> dict[str, str]:
    """Decoded key → value of a Secret (data is base64) or a ConfigMap (data and binaryData)."""
    out: dict[str, str] = {}
    if kind == "secret":
        for k, v in (obj.get("data") or {}).items():
            try:
                out[k] = base64.b64decode(v or "").decode("utf-8", "replace")
            except ValueError:
                out[k] = ""
        out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    else:
        out.update({k: str(v) for k, v in (obj.get("data") or {}).items()})
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v or "").decode("utf-8", "replace")
    return out


def _lookup(cache: Any, kind: str, namespace: str, name: str) -> Obj | None:
    return cache.get(_KINDS[kind][0], namespace, name)


def _source_error(cache: Any, namespace: str, kind: str, ref: Obj) -> str | None:
    """The mount error of one secret/configMap volume source, or None."""
    name = ref.get("secretName" if kind == "secret" else "name") or ""
    obj = _lookup(cache, kind, namespace, name)
    if obj is None:
        return None if ref.get("optional") else f'{kind} "{name}" not found'
    values = _values(obj, kind)
    for item in ref.get("items") or []:
        if item.get("key") not in values and not ref.get("optional"):
            what = "secret" if kind == "secret" else "configmap"
            return f"{what} references non-existent {'secret' if kind == 'secret' else 'config'} key: {item.get('key')}"
    return None


def volume_errors(cache: Any, pod: Obj) -> list[tuple[str, str]]:
    """(volume name, `MountVolume.SetUp failed ...` message) for each volume that cannot be mounted."""
    namespace = pod["metadata"]["namespace"]
    errors = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        sources: list[tuple[str, Obj]] = []
        if vol.get("secret") is not None:
            sources.append(("secret", vol["secret"]))
        if vol.get("configMap") is not None:
            sources.append(("configmap", vol["configMap"]))
        for src in (vol.get("projected") or {}).get("sources") or []:
            if src.get("secret") is not None:
                sources.append(("secret", {**src["secret"], "secretName": src["secret"].get("name")}))
            if src.get("configMap") is not None:
                sources.append(("configmap", src["configMap"]))
        for kind, ref in sources:
            err = _source_error(cache, namespace, kind, ref)
            if err:
                errors.append((vol["name"], f'MountVolume.SetUp failed for volume "{vol["name"]}" : {err}'))
                break
    return errors


def container_env(cache: Any, pod: Obj, container: Obj) -> dict[str, str]:
    """Env vars the container gets from Secrets and ConfigMaps (envFrom first, then env, later wins).
    Raises ConfigError with the kubelet's message for a missing non-optional reference."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        for kind, key in (("secret", "secretRef"), ("configmap", "configMapRef")):
            ref = src.get(key)
            if ref is None:
                continue
            obj = _lookup(cache, kind, namespace, ref.get("name") or "")
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{ref.get("name")}" not found')
            prefix = src.get("prefix") or ""
            env.update({prefix + k: v for k, v in _values(obj, kind).items()})
    for e in container.get("env") or []:
        value_from = e.get("valueFrom") or {}
        for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = value_from.get(key)
            if ref is None:
                continue
            name = ref.get("name") or ""
            obj = _lookup(cache, kind, namespace, name)
            if obj is None:
                if ref.get("optional"):
                    break
                raise ConfigError(f'{kind} "{name}" not found')
            values = _values(obj, kind)
            if ref.get("key") not in values:
                if ref.get("optional"):
                    break
                raise ConfigError(f"couldn't find key {ref.get('key')} in {_KINDS[kind][1]} {namespace}/{name}")
            env[e["name"]] = values[ref["key"]]
    return env


def pull_secrets(cache: Any, pod: Obj) -> tuple[list[Obj], list[str]]:
    """(the imagePullSecrets that exist, the names of those that do not)."""
    namespace = pod["metadata"]["namespace"]
    found, missing = [], []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        obj = cache.get("secrets", namespace, ref.get("name") or "")
        if obj is None:
            missing.append(ref.get("name") or "")
        else:
            found.append(obj)
    return found, missing
