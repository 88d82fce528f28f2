"""Fixtures for the sandbox runtime tests: a real Store and the runtime started in-process."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from k8s_runbooks.sandbox.runtime import Runtime, start_runtime
from k8s_runbooks.sandbox.store import Store

NS = "shop"


def wait_for(fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def deployment(name: str, replicas: int = 2, image: str = "sandbox/shop:1", env: dict[str, str] | None = None,
               resources: dict[str, Any] | None = None, probe: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image, "ports": [{"containerPort": 8080, "name": "http"}],
                                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    if resources:
        container["resources"] = resources
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name},
                                           "annotations": {"prometheus.io/scrape": "true",
                                                           "prometheus.io/port": "8080",
                                                           "sandbox.k8s-runbooks.io/probe-period-ms": "200"}},
                              "spec": {"containers": [container], "terminationGracePeriodSeconds": 5}}},
    }


def pods_of(store: Store, app: str, ns: str = NS) -> list[dict[str, Any]]:
    return store.list("pods", ns, label_selector=f"app={app}")[0]


def ready_pods(store: Store, app: str, ns: str = NS) -> list[dict[str, Any]]:
    return [p for p in pods_of(store, app, ns) if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])]


def free_subnet() -> str:
    """A random 127.X pod subnet nobody on the machine listens in (other test runs pick theirs too)."""
    used = {c.laddr.ip.split(".")[1] for c in psutil.net_connections(kind="inet4")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip.startswith("127.")}
    choices = [x for x in range(2, 251) if str(x) not in used]
    return f"127.{random.choice(choices)}"


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    s.create("namespaces", {"metadata": {"name": NS}})
    yield s
    s.close()


@pytest.fixture
def runtime(store: Store, tmp_path: Path) -> Iterator[Runtime]:
    rt = start_runtime(store, None, state_dir=tmp_path, api_url="http://127.0.0.1:1", pod_subnet=free_subnet(),
                       crashloop_backoff_cap=2.0, resync_seconds=0.5)
    try:
        yield rt
    finally:
        rt.stop()
