"""Synthetic traffic: steady requests to every ready pod of Services labelled
`sandbox.k8s-runbooks.io/traffic=true`, so latency and error series always exist."""

from __future__ import annotations

import http.client
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from k8s_runbooks.sandbox.store import Store

log = logging.getLogger(__name__)

TRAFFIC_LABEL = "sandbox.k8s-runbooks.io/traffic"
PATHS = ("/checkout", "/", "/checkout", "/checkout")


def ready_targets(store: Store) -> list[tuple[str, int]]:
    targets: list[tuple[str, int]] = []
    for svc in store.list("services", label_selector=f"{TRAFFIC_LABEL}=true")[0]:
        ep = store.try_get("endpoints", svc["metadata"]["namespace"], svc["metadata"]["name"])
        for subset in (ep or {}).get("subsets") or []:
            ports = [p["port"] for p in subset.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
            for addr in subset.get("addresses") or []:
                for port in ports[:1]:
                    targets.append((addr["ip"], int(port)))
    return targets


def _get(ip: str, port: int, path: str, timeout: float) -> None:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "sandbox-traffic/1"})
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # a failing pod is exactly what the metrics should show; nothing to do here
    finally:
        conn.close()


class Traffic:
    def __init__(self, store: Store, *, rps: float = 20.0, timeout: float = 2.0, workers: int = 8) -> None:
        self.store = store
        self.rps = rps
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-traffic")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        targets: list[tuple[str, int]] = []
        refresh = 0.0
        paths = itertools.cycle(PATHS)
        rr = 0
        in_flight = [0]
        lock = threading.Lock()

        def done(_f: object) -> None:
            with lock:
                in_flight[0] -= 1

        while not self._stop.wait(1.0 / self.rps):
            now = time.monotonic()
            if now >= refresh:
                try:
                    targets = ready_targets(self.store)
                except Exception:
                    log.exception("traffic: listing targets failed")
                refresh = now + 1.0
            if not targets:
                continue
            with lock:
                if in_flight[0] >= 32:  # slow pods must not pile up requests without bound
                    continue
                in_flight[0] += 1
            ip, port = targets[rr % len(targets)]
            rr += 1
            fut = self._pool.submit(_get, ip, port, next(paths), self.timeout)
            fut.add_done_callback(done)
