"""A local HTTP server in a thread on a free port (stdlib), and a generic webhook receiver built on it.

    with WebhookReceiver() as hook:
        hook.script([500, 200])          # answer 500 once, then 200
        send_webhook("hi", hook.url, 5)
        assert hook.requests[-1].json == {"text": "hi"}
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

def free_port() -> int:
    """A port nothing listens on right now (another process may still take it: bind with a retry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# handler(method, path, headers, body) -> (status, headers, body)
Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class LocalHTTPServer:
    """Runs `handler` for every request; records them in `requests`. Binds 127.0.0.1 on a free port."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    outer.requests.append(Received(self.command, self.path, headers, body))
                status, out_headers, out_body = outer.handler(self.command, self.path, headers, body)
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(out_body)))
                self.end_headers()
                self.wfile.write(out_body)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):  # noqa: ANN204
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _Script:
    statuses: list[int] = field(default_factory=list)


class WebhookReceiver(LocalHTTPServer):
    """Slack-style incoming webhook at `/hooks/<anything>`: answers `ok` (200) unless scripted otherwise."""

    def __init__(self) -> None:
        self._script = _Script()
        super().__init__(self._handle)
        self.url = f"{self.base_url}/hooks/T000/B000/secret-path-token"

    def script(self, statuses: list[int]) -> None:
        """Answer these statuses to the next requests, in order (then 200)."""
        self._script.statuses = list(statuses)

    @property
    def received(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST"]

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        status = self._script.statuses.pop(0) if self._script.statuses else 200
        text = b"ok" if status == 200 else b"invalid_payload" if status == 400 else b"error"
        return status, {"Content-Type": "text/plain"}, text
