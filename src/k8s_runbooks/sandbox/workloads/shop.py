"""The demo shop service (`sandbox/shop:*`): a small HTTP server with Prometheus metrics and faults.

Stdlib only so it starts fast. Listens on $POD_IP:$PORT (default 127.0.0.1:8080). Faults come from the
environment, the way an operator injects them with `kubectl set env`:
FAULT_LATENCY_MS, FAULT_ERROR_RATE (0..1), FAULT_CRASH_AFTER_S, FAULT_MESSAGE, FAULT_LEAK_MB_PER_S,
FAULT_CPU_BURN (0..1 of a core).

Feature flags: FEATURE_FLAGS_DIR names the directory a `feature-flags` ConfigMap is mounted at (one file per flag,
`on` or `off`), re-read every FLAG_POLL_S as the kubelet refreshes it (resolved under $SANDBOX_ROOTFS, where the
sandbox kubelet links volume mounts). FAULT_FLAG=<flag> puts every fault behind that flag: the faulty code path
runs only while the flag reads `on`, so turning the flag off makes it go quiet without a restart.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_CRASH_MESSAGE = "panic: simulated crash: nil pointer dereference in checkout handler"
ACCESS_LOG_EVERY = 50
OVERLOAD_IN_FLIGHT = 64
FLAG_POLL_S = 0.5


def _env_float(name: str, default: float = 0.0) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def log(level: str, msg: str, stream=None) -> None:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{ts} {level} {msg}", file=stream or sys.stdout, flush=True)


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str, str], list[int]] = {}
        self.sums: dict[tuple[str, str, str], float] = defaultdict(float)

    def observe(self, method: str, path: str, code: int, seconds: float) -> int:
        key = (method, path, str(code))
        with self.lock:
            self.counts[key] += 1
            b = self.buckets.setdefault(key, [0] * len(BUCKETS))
            for i, le in enumerate(BUCKETS):
                if seconds <= le:
                    b[i] += 1
            self.sums[key] += seconds
            return sum(self.counts.values())

    def render(self) -> str:
        out = ["# HELP http_request_duration_seconds Duration of HTTP requests.",
               "# TYPE http_request_duration_seconds histogram"]
        with self.lock:
            items = sorted(self.counts.items())
            for key, count in items:
                labels = f'method="{key[0]}",path="{key[1]}",code="{key[2]}"'
                for le, n in zip(BUCKETS, self.buckets[key]):
                    out.append(f'http_request_duration_seconds_bucket{{{labels},le="{le}"}} {n}')
                out.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {count}')
                out.append(f"http_request_duration_seconds_sum{{{labels}}} {self.sums[key]:.6f}")
                out.append(f"http_request_duration_seconds_count{{{labels}}} {count}")
            out += ["# HELP http_requests_total Total HTTP requests.", "# TYPE http_requests_total counter"]
            for key, count in items:
                out.append(f'http_requests_total{{method="{key[0]}",path="{key[1]}",code="{key[2]}"}} {count}')
        out += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {_rss_bytes()}",
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
                "# TYPE process_cpu_seconds_total counter",
                f"process_cpu_seconds_total {sum(os.times()[:2]):.3f}"]
        return "\n".join(out) + "\n"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Shop:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.latency_s = _env_float("FAULT_LATENCY_MS") / 1000.0
        self.error_rate = min(max(_env_float("FAULT_ERROR_RATE"), 0.0), 1.0)
        self.crash_after = _env_float("FAULT_CRASH_AFTER_S")
        self.crashing = False
        self.in_flight = 0
        self.lock = threading.Lock()
        self.leak: list[bytearray] = []
        self.fault_flag = os.environ.get("FAULT_FLAG", "").strip()
        self.flag_on = not self.fault_flag  # no flag: faults always on

    def faulty(self) -> bool:
        """The faulty code path runs (always without FAULT_FLAG; with it, only while the flag is on)."""
        return self.flag_on


def flag_value(flag: str) -> str:
    """A flag's value from the mounted ConfigMap (`off` when the directory or key is missing: flags default off)."""
    directory = os.environ.get("FEATURE_FLAGS_DIR", "")
    if not directory or not flag:
        return "off"
    root = os.environ.get("SANDBOX_ROOTFS", "/")
    try:
        with open(os.path.join(root, directory.lstrip("/"), flag), encoding="utf-8") as fh:
            return fh.read().strip().lower()
    except OSError:
        return "off"


def _watch_flag() -> None:
    while True:
        on = flag_value(SHOP.fault_flag) == "on"
        if on != SHOP.flag_on:
            SHOP.flag_on = on
            log("INFO", f"feature flag {SHOP.fault_flag} is {'on' if on else 'off'}: the code behind it "
                        f"{'runs' if on else 'is switched off'}")
        time.sleep(FLAG_POLL_S)


SHOP = Shop()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-shop/1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # access log is sampled in _finish instead

    def _send(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, SHOP.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            return
        if path == "/healthz":
            with SHOP.lock:
                overloaded = SHOP.in_flight > OVERLOAD_IN_FLIGHT
            if SHOP.crashing or overloaded:
                self._send(503, "unhealthy\n")
            else:
                self._send(200, "ok\n")
            return
        if path not in ("/", "/checkout"):
            self._send(404, "not found\n")
            self._finish(path if len(path) < 32 else "other", 404, 0.0)
            return
        start = time.perf_counter()
        with SHOP.lock:
            SHOP.in_flight += 1
        try:
            faulty = SHOP.faulty()
            if SHOP.latency_s and faulty:
                time.sleep(SHOP.latency_s)
            if path == "/checkout":
                total = sum(i * i for i in range(2000))  # a little real work
                body = f"order accepted (ref {total % 9973})\n"
            else:
                body = "sandbox shop\n"
            code = 500 if faulty and SHOP.error_rate and random.random() < SHOP.error_rate else 200
            if code == 500:
                log("ERROR", f"{path}: upstream payment gateway returned 502, failing request")
                body = "internal server error\n"
            self._send(code, body)
        finally:
            with SHOP.lock:
                SHOP.in_flight -= 1
        self._finish(path, code, time.perf_counter() - start)

    def _finish(self, path: str, code: int, seconds: float) -> None:
        n = SHOP.metrics.observe("GET", path, code, seconds)
        if n % ACCESS_LOG_EVERY == 1:
            log("INFO", f'{self.client_address[0]} "GET {path}" {code} {seconds * 1000:.1f}ms (requests={n})')


def _crash_later(after: float) -> None:
    time.sleep(after)
    while not SHOP.faulty():
        time.sleep(FLAG_POLL_S)
    SHOP.crashing = True
    msg = os.environ.get("FAULT_MESSAGE") or DEFAULT_CRASH_MESSAGE
    print(msg, file=sys.stderr, flush=True)
    print("goroutine 1 [running]:\nmain.checkoutHandler(...)\n\t/app/checkout.go:42", file=sys.stderr, flush=True)
    os._exit(1)


def _leak(mb_per_s: float) -> None:
    chunk = max(int(mb_per_s * 1024 * 1024 / 10), 1)
    while True:
        if SHOP.faulty():
            SHOP.leak.append(bytearray(b"\x01") * chunk)  # touched pages, so RSS really grows
        time.sleep(0.1)


def _burn(fraction: float) -> None:
    period = 0.1
    while True:
        if not SHOP.faulty():
            time.sleep(period)
            continue
        end = time.perf_counter() + period * fraction
        while time.perf_counter() < end:
            pass
        if fraction < 1.0:
            time.sleep(period * (1.0 - fraction))


def main() -> None:
    host = os.environ.get("POD_IP") or "127.0.0.1"
    port = int(os.environ.get("PORT") or 8080)
    name = os.environ.get("POD_NAME", "shop")
    log("INFO", f"starting sandbox shop {name} on {host}:{port}")
    log("INFO", "connecting to postgres://checkout:s3cr3t-pa55@db:5432/shop")
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True

    def _term(*_: object) -> None:
        log("INFO", "received SIGTERM, shutting down")
        os._exit(0)

    signal.signal(signal.SIGTERM, _term)
    faults = {k: v for k, v in os.environ.items() if k.startswith("FAULT_")}
    if faults:
        log("WARN", "fault injection active: " + " ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    if SHOP.fault_flag:
        SHOP.flag_on = flag_value(SHOP.fault_flag) == "on"
        log("INFO", f"faults behind feature flag {SHOP.fault_flag} (now {'on' if SHOP.flag_on else 'off'})")
        threading.Thread(target=_watch_flag, daemon=True).start()
    if SHOP.crash_after > 0:
        threading.Thread(target=_crash_later, args=(SHOP.crash_after,), daemon=True).start()
    leak = _env_float("FAULT_LEAK_MB_PER_S")
    if leak > 0:
        threading.Thread(target=_leak, args=(leak,), daemon=True).start()
    burn = min(max(_env_float("FAULT_CPU_BURN"), 0.0), 1.0)
    if burn > 0:
        threading.Thread(target=_burn, args=(burn,), daemon=True).start()
    log("INFO", f"listening on http://{host}:{port}")
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
