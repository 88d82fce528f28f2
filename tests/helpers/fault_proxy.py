"""A TCP proxy on a free port in front of a real HTTP server, with a switch for API outages.

    with FaultProxy("127.0.0.1", 4200) as proxy:     # clients use proxy.url instead of the server's
        proxy.refuse()           # nothing listens: connection refused (open connections are cut)
        proxy.answer(503)        # every request answered 503 "database is locked", counted by request line
        proxy.restore()          # forward again

Bytes are forwarded untouched (HTTP/1.1 keep-alive, websockets); switching mode cuts open connections so a
client's pooled connection cannot slip past the fault.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from types import TracebackType

from tests.helpers.http_receiver import free_port

_LOCKED = b'{"exception_message":"database is locked"}'


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.mode = "forward"  # forward | refuse | answer
        self.status = 503
        self.answered: Counter[str] = Counter()  # "GET /api/flow_runs/<id>" -> requests answered with `status`
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._generation = 0  # bumped by every switch: a connection accepted before it must not outlive it
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._listen()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop_listening()
        self._switch("refuse")

    # ------------------------------------------------------------------ switch
    def refuse(self) -> None:
        self._stop_listening()
        self._switch("refuse")

    def answer(self, status: int = 503) -> None:
        self.status = status
        self._switch("answer")
        if self._listener is None:
            self._listen()

    def restore(self) -> None:
        self._switch("forward")
        if self._listener is None:
            self._listen()

    # ------------------------------------------------------------------ plumbing
    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(): close() alone leaves the socket listening until it returns
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def _switch(self, mode: str) -> None:
        """Change mode and cut every open connection (pooled keep-alive ones included)."""
        with self._lock:
            self.mode = mode
            self._generation += 1
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _track(self, generation: int, *socks: socket.socket) -> bool:
        """Register open sockets so a switch can cut them; False (and closed) if a switch came in between."""
        with self._lock:
            if generation == self._generation:
                self._conns.update(socks)
                return True
        for s in socks:
            s.close()
        return False

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed (refuse/exit)
            conn.settimeout(30)
            with self._lock:
                mode, generation = self.mode, self._generation
            if mode == "refuse":
                conn.close()
                continue
            target = self._answer if mode == "answer" else self._forward
            threading.Thread(target=target, args=(conn, generation), daemon=True).start()

    def _answer(self, conn: socket.socket, generation: int) -> None:
        if not self._track(generation, conn):
            return
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                           if k.strip().lower() == "content-length"), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            method, path = (lines[0].split(" ") + ["", ""])[:2]
            with self._lock:
                self.answered[f"{method} {path.split('?')[0]}"] += 1
            conn.sendall(b"HTTP/1.1 %d Fault\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (self.status, len(_LOCKED), _LOCKED))
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)

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
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                with self._lock:
                    self._conns.discard(s)
