"""Container probes as the kubelet runs them: httpGet, tcpSocket and exec against the pod's process, with
the prober's result messages, and the per-probe counters (initialDelaySeconds, periodSeconds,
timeoutSeconds, successThreshold, failureThreshold).

The kubelet (kubelet.py) schedules probes and acts on results: readiness flips the Ready condition,
liveness and startup failures kill the container (`Container app failed liveness probe, will be restarted`).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
LABELS = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}
USER_AGENT = "kube-probe/1.37"


@dataclass
class ProbeState:
    """Counters of one probe of one container instance."""

    kind: str
    spec: Obj
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    inflight: bool = False
    passed: bool = False  # startup: has succeeded once; readiness: currently ready

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)


def apply_defaults(container: Obj) -> None:
    """The API server's defaults for a container's probes (what `kubectl describe` then prints)."""
    for kind in KINDS:
        probe = container.get(kind)
        if not isinstance(probe, dict):
            continue
        for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                           ("failureThreshold", 3)):
            if probe.get(key) is None:
                probe[key] = value
        if isinstance(probe.get("httpGet"), dict):
            probe["httpGet"].setdefault("scheme", "HTTP")
            probe["httpGet"].setdefault("path", "/")


def new_states(container: Obj, started_at: float) -> dict[str, ProbeState]:
    """Fresh probe states for a container instance that just started."""
    states = {}
    for kind in KINDS:
        spec = container.get(kind)
        if spec:
            states[kind] = ProbeState(kind, spec, next_at=started_at + float(spec.get("initialDelaySeconds") or 0))
    return states


def resolve_port(port: Any, container: Obj) -> int | None:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


def run(probe: Obj, container: Obj, pod_ip: str, env: dict[str, str]) -> tuple[bool, str]:
    """Run one probe; (success, the prober's message). Blocking: call it from a worker thread."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    if probe.get("httpGet") is not None:
        spec = probe["httpGet"]
        port = resolve_port(spec.get("port"), container)
        if port is None:
            return False, f"unable to find port {spec.get('port')!r} in container {container.get('name')}"
        headers = {h.get("name", ""): h.get("value", "") for h in spec.get("httpHeaders") or []}
        return http_probe(spec.get("host") or pod_ip, port, spec.get("path") or "/", timeout, headers,
                          scheme=spec.get("scheme") or "HTTP")
    if probe.get("tcpSocket") is not None:
        spec = probe["tcpSocket"]
        port = resolve_port(spec.get("port"), container)
        if port is None:
            return False, f"unable to find port {spec.get('port')!r} in container {container.get('name')}"
        return tcp_probe(spec.get("host") or pod_ip, port, timeout)
    if probe.get("exec") is not None:
        return exec_probe(list(probe["exec"].get("command") or []), env, timeout)
    if probe.get("grpc") is not None:  # no gRPC health client here: the port accepting connections stands in
        return tcp_probe(pod_ip, int(probe["grpc"].get("port") or 0), timeout)
    return True, ""


def _dial_error(exc: BaseException, host: str, port: int) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {host}:{port}: connect: connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"dial tcp {host}:{port}: i/o timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return f"dial tcp {host}:{port}: connect: {exc.strerror.lower()}"
    return f"dial tcp {host}:{port}: {exc or type(exc).__name__}"


def http_probe(host: str, port: int, path: str, timeout: float, headers: dict[str, str] | None = None,
               scheme: str = "HTTP") -> tuple[bool, str]:
    url = f"{scheme.lower()}://{host}:{port}{path}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as exc:
            return False, f'Get "{url}": {_dial_error(exc, host, port)}'
        try:
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "*/*", **(headers or {})})
            resp = conn.getresponse()
            resp.read()
        except (socket.timeout, TimeoutError):
            return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        except (OSError, http.client.HTTPException) as exc:
            return False, f'Get "{url}": {exc or type(exc).__name__}'
        if 200 <= resp.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {resp.status}"
    finally:
        conn.close()


def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, _dial_error(exc, host, port)


def exec_probe(command: list[str], env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """The command runs beside the container's process, with its environment (there is no namespace to enter)."""
    if not command:
        return False, "exec probe has no command"
    try:
        proc = subprocess.run(command, env=env, cwd="/tmp", stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"command {' '.join(command)!r} timed out"
    except OSError as exc:
        return False, (f'OCI runtime exec failed: exec failed: unable to start container process: exec: '
                       f'"{command[0]}": {os.strerror(exc.errno or 0).lower()}: unknown')
    if proc.returncode == 0:
        return True, ""
    return False, (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
