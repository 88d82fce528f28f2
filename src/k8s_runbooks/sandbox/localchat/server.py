"""The sandbox component `chatops`: a local Slack Web API and PagerDuty Events API v2 on one loopback port.

    python -m k8s_runbooks.sandbox.localchat.server --state-dir D --port P

    /api/<method>      Slack Web API (chat.postMessage, chat.update, chat.postEphemeral, usergroups.users.list, api.test)
    /v2/enqueue        PagerDuty Events API v2 (trigger, acknowledge, resolve by dedup_key)
    /healthz           200 when serving
    /_sandbox/knobs    GET the knobs, POST {"rate_limit_next": N, "retry_after": S, "delay_seconds": S,
                       "fail_with": "error"|null} to make Slack misbehave

The bot token and routing keys come from D/secrets/chatops.env; what it receives is written to
D/localchat/state.json after every change (so it survives restarts, and the CLI reads it from there).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox.localchat import workspace
from k8s_runbooks.sandbox.localchat.pagerduty import PagerDutyEvents
from k8s_runbooks.sandbox.localchat.slack import Answer, Knobs, SlackWebAPI

log = logging.getLogger("k8s_runbooks.sandbox.localchat")
MAX_BODY = 1 << 20


class LocalChat:
    """The Slack workspace and the PagerDuty account of one state dir, persisted on every change."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        values = workspace.read_secrets(self.state_dir)
        self.slack = SlackWebAPI(values[workspace.BOT_TOKEN], workspace.CHANNELS, workspace.GROUPS, workspace.USERS)
        self.pagerduty = PagerDutyEvents(workspace.routing_keys(values))
        saved = workspace.read_state(self.state_dir)
        self.slack.load_dict(saved.get("slack", {}))
        self.pagerduty.load_dict(saved.get("pagerduty", {}))
        self._lock = threading.Lock()
        self.slack.on_change = self.pagerduty.on_change = self.save

    def save(self) -> None:
        with self._lock:
            workspace.write_state(self.state_dir, {"slack": self.slack.to_dict(), "pagerduty": self.pagerduty.to_dict()})

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        route = path.split("?", 1)[0]
        if route == "/healthz":
            return _json(200, {"ok": True, "messages": len(self.slack.messages), "pages": len(self.pagerduty.incidents)})
        if route.startswith("/api/"):
            return self.slack.handle(method, path, headers, body)
        if route == "/v2/enqueue":
            return self.pagerduty.handle(method, path, headers, body)
        if route == "/_sandbox/knobs":
            return self._knobs(method, body)
        return _json(404, {"ok": False, "error": "not_found"})

    def _knobs(self, method: str, body: bytes) -> Answer:
        if method == "POST":
            try:
                change = json.loads(body or b"{}")
                known = {f.name for f in fields(Knobs)}
                if not isinstance(change, dict) or set(change) - known:
                    raise ValueError(f"knobs are {', '.join(sorted(known))}")
                knobs = Knobs(**{**asdict(self.slack.knobs), **change})
                if knobs.rate_limit_next < 0 or knobs.retry_after < 0 or knobs.delay_seconds < 0:
                    raise ValueError("knobs are never negative")
            except (ValueError, TypeError) as exc:
                return _json(400, {"ok": False, "error": "invalid_knobs", "detail": str(exc)})
            self.slack.knobs = knobs
            log.info("Slack knobs now %s", asdict(knobs))
        return _json(200, {"ok": True, "knobs": asdict(self.slack.knobs)})


def _json(status: int, obj: dict[str, Any]) -> Answer:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(obj).encode()


def make_server(chat: LocalChat, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "k8s-runbooks-localchat"

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                status, headers, body = _json(413 if length > 0 else 400, {"ok": False, "error": "invalid_content_length"})
            else:
                raw = self.rfile.read(length) if length else b""
                try:
                    status, headers, body = chat.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                except Exception:  # noqa: BLE001 - Slack answers a bug with internal_error, never a dropped connection
                    log.exception("%s %s failed", self.command, self.path.split("?", 1)[0])
                    status, headers, body = _json(500, {"ok": False, "error": "internal_error"})
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - one line per request, paths only
            log.info("%s %s -> %s", self.command, self.path.split("?", 1)[0], args[1] if len(args) > 1 else "")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s_runbooks.sandbox.localchat.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chat = LocalChat(args.state_dir)
        server = make_server(chat, args.host, args.port)
    except (workspace.WorkspaceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log.info("local Slack at http://%s:%d/api, PagerDuty Events at http://%s:%d/v2/enqueue; state in %s",
             args.host, args.port, args.host, args.port, workspace.state_path(args.state_dir))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
