"""A FaultProxy that can stop one kind of call mid-way: the receiver is then stuck in exactly that call, and a test
can kill it there (between two steps of the dispatcher) instead of hoping a SIGKILL lands in a millisecond window.

    with HoldingProxy("127.0.0.1", prefect_port) as proxy:           # the receiver's PREFECT_API_URL: proxy.url/api
        proxy.hold(lambda method, path: "mute" if method == "PATCH" else None)
        ...; proxy.held.wait(30)                                        # the receiver now waits for an answer

`mute`: the request reaches the server (it acts on it) but its answer never comes back; `drop`: the request never
reaches the server. Either way the connection then stays silent. Request bodies must carry Content-Length (the
Prefect client's JSON calls do).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Literal

from tests.helpers.fault_proxy import FaultProxy

Hold = Literal["mute", "drop"]


class HoldingProxy(FaultProxy):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.rule: Callable[[str, str], Hold | None] | None = None
        self.held = threading.Event()
        self.held_requests: list[str] = []

    def hold(self, rule: Callable[[str, str], Hold | None]) -> None:
        """From now on, the first request `rule(method, path)` selects is held (see the module docstring)."""
        self.held.clear()
        self.rule = rule

    def release(self) -> None:
        """Forward everything again; held connections are cut."""
        self.rule = None
        self.restore()

    def _forward(self, conn: socket.socket, generation: int) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        conn.settimeout(None)
        if not self._track(generation, conn, upstream):
            return
        silent = threading.Event()
        threading.Thread(target=self._answers, args=(upstream, conn, silent), daemon=True).start()
        self._requests(conn, upstream, silent)

    def _answers(self, upstream: socket.socket, conn: socket.socket, silent: threading.Event) -> None:
        try:
            while chunk := upstream.recv(65536):
                if not silent.is_set():
                    conn.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(upstream, conn)

    def _requests(self, conn: socket.socket, upstream: socket.socket, silent: threading.Event) -> None:
        buf = b""
        try:
            while chunk := conn.recv(65536):
                buf += chunk
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    lines = buf[:end].decode("latin-1").split("\r\n")
                    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                                   if k.strip().lower() == "content-length"), 0)
                    if len(buf) < end + 4 + length:
                        break
                    request, buf = buf[:end + 4 + length], buf[end + 4 + length:]
                    method, path = (lines[0].split(" ") + ["", ""])[:2]
                    rule = self.rule
                    action = rule(method, path.split("?")[0]) if rule is not None and not self.held.is_set() else None
                    if action is not None:
                        silent.set()
                    if action != "drop":
                        upstream.sendall(request)
                    if action is not None:
                        self.held_requests.append(f"{action} {method} {path}")
                        self.held.set()
        except OSError:
            pass
        finally:
            self._close(conn, upstream)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._conns.discard(s)
