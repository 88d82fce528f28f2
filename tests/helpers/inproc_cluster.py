"""A sandbox cluster in this process: the store, the API server on a free port and the runtime (controllers,
scheduler, kubelet on three nodes), with kubectl and the official client pointed at it through a kubeconfig."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from k8s_runbooks.sandbox.apiserver import ApiServer
from k8s_runbooks.sandbox.cluster import new_store
from k8s_runbooks.sandbox.kubeconfig import write_kubeconfig
from k8s_runbooks.sandbox.runtime import Runtime, start_runtime
from k8s_runbooks.sandbox.store import Store

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"


@dataclass
class InProcCluster:
    store: Store
    url: str
    kubeconfig: Path
    state_dir: Path
    runtime: Runtime
    api_client: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 30,
                input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.state_dir / "kubecache")}
        proc = subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=timeout,
                              input=input_text)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def events(self, namespace: str, name: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        """Events of the namespace (of one object, of one reason), oldest first."""
        items = self.store.list("events", namespace)[0]
        return sorted((e for e in items if (name is None or e["involvedObject"]["name"] == name)
                       and (reason is None or e["reason"] == reason)), key=lambda e: e["firstTimestamp"])

    def pods(self, namespace: str, app: str) -> list[dict[str, Any]]:
        return [p for p in self.store.list("pods", namespace, label_selector=f"app={app}")[0]
                if not p["metadata"].get("deletionTimestamp")]


@contextmanager
def inproc_cluster(state_dir: Path, pod_subnet: str) -> Iterator[InProcCluster]:
    store = new_store()
    api = ApiServer(store, "127.0.0.1", 0, state_dir=state_dir)
    api.start()
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, api.url)
    runtime = start_runtime(store, api, state_dir=state_dir, api_url=api.url, pod_subnet=pod_subnet,
                            crashloop_backoff_cap=2.0, resync_seconds=0.5)
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield InProcCluster(store, api.url, kubeconfig, state_dir, runtime, api_client)
    finally:
        api_client.close()
        runtime.stop()
        api.stop()
        store.close()
