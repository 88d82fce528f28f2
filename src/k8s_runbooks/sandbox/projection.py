"""configMap and secret volumes as files, kept up to date like the kubelet keeps them.

A real kubelet writes each configMap/secret volume under `pods/<uid>/volumes/kubernetes.io~configmap/<name>/`
with its atomic writer (a `..<timestamp>` directory, a `..data` symlink swapped in one rename, and one symlink
per key pointing into `..data`), bind-mounts it at the container's `mountPath`, and rewrites it when the object
changes (within its sync period), so an application that re-reads the files sees the new values without a
restart. Pods here are local processes without a mount namespace: the volume is written the same way under the
pod's directory, each `volumeMount` becomes a symlink under `<pod dir>/rootfs/<mountPath>`, and the container
gets `SANDBOX_ROOTFS` to resolve absolute paths against (the demo image does; see workloads/shop.py).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox.podconfig import _values

Obj = dict[str, Any]
ROOTFS_ENV = "SANDBOX_ROOTFS"
_PLUGINS = {"configmap": "kubernetes.io~configmap", "secret": "kubernetes.io~secret"}


def _sources(vol: Obj) -> list[tuple[str, str, Obj]]:
    """(kind, object name, reference) of a volume's configMap/secret sources (projected ones included)."""
    out: list[tuple[str, str, Obj]] = []
    if vol.get("configMap") is not None:
        out.append(("configmap", vol["configMap"].get("name") or "", vol["configMap"]))
    if vol.get("secret") is not None:
        out.append(("secret", vol["secret"].get("secretName") or "", vol["secret"]))
    for src in (vol.get("projected") or {}).get("sources") or []:
        for kind, key in (("configmap", "configMap"), ("secret", "secret")):
            if src.get(key) is not None:
                out.append((kind, src[key].get("name") or "", src[key]))
    return out


def projected(pod: Obj) -> list[Obj]:
    """The pod's volumes backed by ConfigMaps or Secrets."""
    return [v for v in (pod.get("spec") or {}).get("volumes") or [] if _sources(v)]


def versions(cache: Any, pod: Obj) -> dict[str, str]:
    """volume name -> the resourceVersions it was built from (changes when any source object changes)."""
    ns = pod["metadata"]["namespace"]
    out = {}
    for vol in projected(pod):
        parts = []
        for kind, name, _ref in _sources(vol):
            obj = cache.get("configmaps" if kind == "configmap" else "secrets", ns, name)
            parts.append(f"{kind}/{name}@{obj['metadata'].get('resourceVersion', '') if obj else '-'}")
        out[vol["name"]] = ",".join(parts)
    return out


def _files(cache: Any, ns: str, vol: Obj) -> dict[str, str]:
    files: dict[str, str] = {}
    for kind, name, ref in _sources(vol):
        obj = cache.get("configmaps" if kind == "configmap" else "secrets", ns, name)
        if obj is None:
            continue  # optional and missing (a required missing one never gets here: the mount failed)
        values = _values(obj, kind)
        items = ref.get("items")
        if items:
            files.update({it.get("path") or it["key"]: values[it["key"]] for it in items if it.get("key") in values})
        else:
            files.update(values)
    return files


def volume_dir(pod_dir: Path, vol: Obj) -> Path:
    kind = _sources(vol)[0][0]
    return pod_dir / "volumes" / _PLUGINS[kind] / vol["name"]


def write_volume(cache: Any, pod: Obj, vol: Obj, pod_dir: Path) -> None:
    """(Re)write one volume with the kubelet's atomic layout: readers see the old or the new set, never a mix."""
    target = volume_dir(pod_dir, vol)
    target.mkdir(parents=True, exist_ok=True)
    files = _files(cache, pod["metadata"]["namespace"], vol)
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for rel, content in files.items():
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp = target / "..data_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp.name)
    os.replace(tmp, target / "..data")
    for rel in {r.split("/", 1)[0] for r in files}:
        link = target / rel
        if not link.is_symlink():
            link.symlink_to(Path("..data") / rel)
    for entry in target.iterdir():  # keys that left the object
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in {r.split("/", 1)[0] for r in files}:
            entry.unlink()
    if old:
        shutil.rmtree(target / old, ignore_errors=True)


def mount(cache: Any, pod: Obj, pod_dir: Path) -> dict[str, str]:
    """Write every configMap/secret volume and link each container's volumeMounts under `rootfs`; returns the
    versions written (see `versions`)."""
    for vol in projected(pod):
        write_volume(cache, pod, vol, pod_dir)
    by_name = {v["name"]: v for v in projected(pod)}
    rootfs = pod_dir / "rootfs"
    for c in (pod.get("spec") or {}).get("containers") or []:
        for m in c.get("volumeMounts") or []:
            vol = by_name.get(m.get("name"))
            path = str(m.get("mountPath") or "").strip("/")
            if vol is None or not path:
                continue
            link = rootfs / path
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(volume_dir(pod_dir, vol))
    return versions(cache, pod)


def refresh(cache: Any, pod: Obj, pod_dir: Path, written: dict[str, str]) -> dict[str, str]:
    """Rewrite the volumes whose source objects changed since `written`; returns the versions now on disk."""
    now = versions(cache, pod)
    by_name = {v["name"]: v for v in projected(pod)}
    for name, version in now.items():
        if written.get(name) != version:
            write_volume(cache, pod, by_name[name], pod_dir)
    return now
