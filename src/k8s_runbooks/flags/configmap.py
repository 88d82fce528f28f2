"""The built-in flag provider: a ConfigMap in the workload's namespace, one key per flag, value `on` or `off`.

Workloads read it through a mounted configMap volume (the kubelet refreshes the files when the ConfigMap
changes, so the flag takes effect without a restart) or through an SDK watching the ConfigMap."""

from __future__ import annotations

from k8s_runbooks.errors import NotFound
from k8s_runbooks.kube import workloads
from k8s_runbooks.kube.client import Kube, Op


class ConfigMapFlags:
    def __init__(self, kube: Kube, name: str = "feature-flags") -> None:
        self.kube, self.name = kube, name

    def where(self, namespace: str) -> str:
        return f"ConfigMap {namespace}/{self.name}"

    def read(self, namespace: str, flags: list[str]) -> dict[str, str | None]:
        try:
            cm = self.kube.call(Op("get", "configmaps", namespace, self.name), self.kube.core.read_namespaced_config_map,
                                self.name, namespace)
        except NotFound:
            return {f: None for f in flags}
        data = cm.data or {}
        return {f: (data[f].strip() if f in data else None) for f in flags}

    def set(self, namespace: str, values: dict[str, str]) -> str:
        return workloads._set_configmap_keys(self.kube, namespace, self.name, values)
