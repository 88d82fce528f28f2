"""Test doubles for Sentry at the HTTP level (the real Sentry cannot run on this machine).

- `EnvelopeReceiver`: accepts what real sentry-sdk sends to `/api/<project>/envelope/` (gzip or brotli
  body), parses the envelope format and keeps the decoded events.
- `FakeSentryApi`: serves `GET /api/0/projects/<org>/<project>/issues/` with cursor pagination through
  `Link` headers, checks the bearer token, and can be told to answer 500/429/403 first.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.helpers.http_receiver import LocalHTTPServer

try:
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - sentry-sdk only uses brotli when it is importable
    brotli = None


def decompress(body: bytes, encoding: str | None) -> bytes:
    encoding = (encoding or "").lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        if brotli is None:
            raise ValueError("brotli-compressed envelope but the brotli module is not installed")
        return brotli.decompress(body)
    return body


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Envelope = header line, then (item header line, payload) pairs; a payload is `length` bytes when
    the item header says so, else up to the next newline."""
    newline = data.find(b"\n")
    header = json.loads(data[: newline if newline >= 0 else len(data)])
    pos = newline + 1 if newline >= 0 else len(data)
    items: list[tuple[dict[str, Any], bytes]] = []
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos : end if end >= 0 else len(data)]
        pos = end + 1 if end >= 0 else len(data)
        if not line.strip():
            continue
        item_header = json.loads(line)
        if "length" in item_header:
            length = int(item_header["length"])
            payload = data[pos : pos + length]
            pos += length
            if pos < len(data) and data[pos : pos + 1] == b"\n":
                pos += 1
        else:
            end = data.find(b"\n", pos)
            payload = data[pos : end if end >= 0 else len(data)]
            pos = end + 1 if end >= 0 else len(data)
        items.append((item_header, payload))
    return header, items


class EnvelopeReceiver(LocalHTTPServer):
    """`dsn` is ready for `sentry_sdk.init`; `events` holds the decoded event payloads received."""

    _PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?(\?.*)?$")

    def __init__(self, project: str = "1", key: str = "publickey") -> None:
        super().__init__(self._handle)
        self.dsn = f"http://{key}@127.0.0.1:{self.port}/{project}"
        self.envelopes: list[tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(payload)
            for _, items in self.envelopes
            for item_header, payload in items
            if item_header.get("type") == "event"
        ]

    def wait_for_events(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count, timeout=timeout)
        return self.events

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or not self._PATH.match(path):
            return 404, {}, b"{}"
        try:
            envelope = parse_envelope(decompress(body, headers.get("content-encoding")))
        except (ValueError, OSError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return 400, {}, b"{}"
        with self._changed:
            self.envelopes.append(envelope)
            self._changed.notify_all()
        event_id = envelope[0].get("event_id", "")
        return 200, {"Content-Type": "application/json"}, json.dumps({"id": event_id}).encode()


def sentry_issue(n: int, **overrides: Any) -> dict[str, Any]:
    """An issue as Sentry's Web API returns it (only the fields we read, plus noise)."""
    issue = {
        "id": str(1000 + n),
        "shortId": f"CHECKOUT-{n}",
        "title": f"ValueError: crash {n}",
        "culprit": "shop.app in handle",
        "level": "error",
        "count": str(10 * n),
        "userCount": 1,
        "firstSeen": "2026-11-25T10:00:00.000000Z",
        "lastSeen": "2026-11-25T10:05:00.000000Z",
        "permalink": f"https://sentry.example/organizations/acme/issues/{1000 + n}/",
        "status": "unresolved",
        "metadata": {"type": "ValueError"},
    }
    issue.update(overrides)
    return issue


class FakeSentryApi(LocalHTTPServer):
    """`api_url` is what `settings.sentry_api_url` should be (`.../api/0`)."""

    _PATH = re.compile(r"^/api/0/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/issues/$")

    def __init__(self, token: str, issues: dict[tuple[str, str], list[dict[str, Any]]], page_size: int = 2) -> None:
        super().__init__(self._handle)
        self.api_url = f"{self.base_url}/api/0"
        self.token = token
        self.issues = issues
        self.page_size = page_size
        self.fail_next: list[int] = []  # statuses to answer first, in order (e.g. [500] or [429])

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(path)
        match = self._PATH.match(url.path)
        if self.fail_next:
            status = self.fail_next.pop(0)
            extra = {"Retry-After": "0"} if status == 429 else {}
            return status, {"Content-Type": "application/json", **extra}, json.dumps({"detail": f"fake {status}"}).encode()
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Invalid token"}'
        if method != "GET" or not match or (match["org"], match["project"]) not in self.issues:
            return 404, {"Content-Type": "application/json"}, b'{"detail": "The requested resource does not exist"}'
        query = parse_qs(url.query)
        if query.get("query") != ["is:unresolved"]:
            return 400, {"Content-Type": "application/json"}, b'{"detail": "expected query=is:unresolved"}'
        everything = self.issues[(match["org"], match["project"])]
        offset = int(query.get("cursor", ["0:0:0"])[0].split(":")[1])
        page = everything[offset : offset + self.page_size]
        more = offset + self.page_size < len(everything)
        base = f"{self.base_url}{url.path}?query=is%3Aunresolved"
        link = (
            f'<{base}&cursor=0:{max(0, offset - self.page_size)}:1>; rel="previous"; results="{str(offset > 0).lower()}"; '
            f'cursor="0:{max(0, offset - self.page_size)}:1", '
            f'<{base}&cursor=0:{offset + self.page_size}:0>; rel="next"; results="{str(more).lower()}"; '
            f'cursor="0:{offset + self.page_size}:0"'
        )
        return 200, {"Content-Type": "application/json", "Link": link}, json.dumps(page).encode()
