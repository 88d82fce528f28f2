"""Synthetic traffic: steady requests to the Services labelled `sandbox.k8s-runbooks.io/traffic=true`, through
their ready endpoints, so latency and error series always exist.

Like an ingress in front of them, it counts what its clients got, per service, on `/metrics/traffic`
(`sandbox_traffic_requests_total{namespace,service,code}`): `503` when the service has no ready endpoint (a
selector or named targetPort that matches nothing), `502` when an endpoint refuses the connection (a
targetPort nobody listens on), else the pod's own status code.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from k8s_runbooks.sandbox.store import Store

log = logging.getLogger(__name__)

TRAFFIC_LABEL = "sandbox.k8s-runbooks.io/traffic"
PATHS = ("/checkout", "/", "/checkout", "/checkout")


def service_targets(store: Store) -> list[tuple[tuple[str, str], list[tuple[str, int]]]]:
    """((namespace, service), [(ip, port) of its ready endpoints]) for every traffic-labelled service."""
    out = []
    for svc in store.list("services", label_selector=f"{TRAFFIC_LABEL}=true")[0]:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        targets: list[tuple[str, int]] = []
        ep = store.try_get("endpoints", ns, name)
        for subset in (ep or {}).get("subsets") or []:
            ports = [p["port"] for p in subset.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
            for addr in subset.get("addresses") or []:
                for port in ports[:1]:
                    targets.append((addr["ip"], int(port)))
        out.append(((ns, name), targets))
    return out


def ready_targets(store: Store) -> list[tuple[str, int]]:
    return [t for _, targets in service_targets(store) for t in targets]


def _get(ip: str, port: int, path: str, timeout: float) -> str:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "sandbox-traffic/1"})
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)
    except ConnectionRefusedError:
        return "502"  # the upstream refused the connection: what an ingress answers
    except (OSError, http.client.HTTPException):
        return "504"  # timed out or reset: a failing pod is exactly what the metrics should show
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
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _count(self, service: tuple[str, str], code: str) -> None:
        with self._lock:
            self._counts[(service[0], service[1], code)] += 1

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Requests so far by (namespace, service, code)."""
        with self._lock:
            return dict(self._counts)

    def render_metrics(self) -> str:
        lines = ["# HELP sandbox_traffic_requests_total Requests of the sandbox's synthetic clients, by the status "
                 "they got (503: no ready endpoint, 502: connection refused, 504: timeout).",
                 "# TYPE sandbox_traffic_requests_total counter"]
        for (ns, svc, code), n in sorted(self.counts().items()):
            lines.append(f'sandbox_traffic_requests_total{{namespace="{ns}",service="{svc}",code="{code}"}} {n}')
        return "\n".join(lines) + "\n"

    def _run(self) -> None:
        services: list[tuple[tuple[str, str], list[tuple[str, int]]]] = []
        refresh = 0.0
        paths = itertools.cycle(PATHS)
        turn = 0
        rr: Counter[tuple[str, str]] = Counter()
        in_flight = [0]
        lock = threading.Lock()

        def done(_f: object) -> None:
            with lock:
                in_flight[0] -= 1

        while not self._stop.wait(1.0 / self.rps):
            now = time.monotonic()
            if now >= refresh:
                try:
                    services = service_targets(self.store)
                except Exception:
                    log.exception("traffic: listing targets failed")
                refresh = now + 1.0
            if not services:
                continue
            service, targets = services[turn % len(services)]
            turn += 1
            if not targets:
                self._count(service, "503")  # no ready endpoint behind the service
                continue
            with lock:
                if in_flight[0] >= 32:  # slow pods must not pile up requests without bound
                    continue
                in_flight[0] += 1
            ip, port = targets[rr[service] % len(targets)]
            rr[service] += 1
            fut = self._pool.submit(_get, ip, port, next(paths), self.timeout)
            fut.add_done_callback(done)
            fut.add_done_callback(lambda f, s=service: self._count(s, f.result()) if not f.cancelled()
                                  and f.exception() is None else None)
