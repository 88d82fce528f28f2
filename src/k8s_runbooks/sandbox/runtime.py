"""Starts the sandbox runtime (controllers, kubelet, traffic) against a Store and wires its metrics
routes into the API server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from k8s_runbooks.sandbox import metrics
from k8s_runbooks.sandbox.controllers import Controllers, EventRecorder, Informer
from k8s_runbooks.sandbox.jobs import JobController
from k8s_runbooks.sandbox.kubelet import Kubelet
from k8s_runbooks.sandbox.nodes import DEFAULT_NODES, NodeSpec, register_nodes
from k8s_runbooks.sandbox.store import Store
from k8s_runbooks.sandbox.traffic import Traffic
from k8s_runbooks.sandbox.volumes import ensure_default_storage_class

log = logging.getLogger(__name__)


class RawRouteHost(Protocol):
    def add_raw_route(self, path: str, fn: Any) -> None: ...


class Runtime:
    def __init__(self, store: Store, informer: Informer, controllers: Controllers, kubelet: Kubelet,
                 traffic: Traffic) -> None:
        self.store = store
        self.informer = informer
        self.controllers = controllers
        self.kubelet = kubelet
        self.traffic = traffic
        self.jobs: JobController | None = None
        self._stopped = False

    def render_kube_state_metrics(self) -> str:
        return metrics.render_kube_state_metrics(self.informer)

    def render_cadvisor(self) -> str:
        return metrics.render_cadvisor(self.kubelet)

    def sd_pods(self) -> list[dict[str, Any]]:
        return metrics.pod_sd_targets(self.informer)

    def stop(self) -> None:
        """Stop all loops and terminate every pod process (SIGTERM, then SIGKILL)."""
        if self._stopped:
            return
        self._stopped = True
        self.traffic.stop()
        if self.jobs is not None:
            self.jobs.stop()
        self.controllers.stop()
        self.kubelet.stop()


def start_runtime(store: Store, api: RawRouteHost | None, *, state_dir: Path, api_url: str,
                  pod_subnet: str = "127.1", crashloop_backoff_cap: float = 40.0,
                  resync_seconds: float = 1.0, traffic_rps: float = 20.0,
                  nodes: tuple[NodeSpec, ...] = DEFAULT_NODES) -> Runtime:
    # The kubelet registers its nodes and the cluster comes with a default StorageClass, before any pod is placed.
    register_nodes(store, nodes)
    ensure_default_storage_class(store)
    recorder = EventRecorder(store)
    informer = Informer(store)
    informer.start()
    controllers = Controllers(store, recorder, informer, resync_seconds=resync_seconds)
    kubelet = Kubelet(store, recorder, informer, state_dir=Path(state_dir), api_url=api_url, pod_subnet=pod_subnet,
                      crashloop_backoff_cap=crashloop_backoff_cap, resync_seconds=resync_seconds)
    traffic = Traffic(store, rps=traffic_rps)
    runtime = Runtime(store, informer, controllers, kubelet, traffic)
    kubelet.start()
    controllers.start()
    traffic.start()
    runtime.jobs = JobController(store, recorder, resync_seconds=resync_seconds)
    runtime.jobs.start()
    if api is not None:
        for path, fn in metrics.raw_routes(informer, kubelet):
            api.add_raw_route(path, fn)
        api.add_raw_route("/metrics/traffic",
                          lambda _q: (200, metrics.TEXT_CONTENT_TYPE, traffic.render_metrics().encode()))
    return runtime
