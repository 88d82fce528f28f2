"""How a run tells whether the Prefect server authenticates its API (PREFECT_SERVER_API_AUTH_STRING): an
unauthenticated API call answers 401, as Prefect's auth middleware does (health probes stay open)."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.chatops import _server_requires_auth
from tests.helpers.http_receiver import LocalHTTPServer


def _prefect_like(auth_on: bool) -> LocalHTTPServer:
    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/api/health":
            return 200, {"Content-Type": "application/json"}, b"true"
        if auth_on and "authorization" not in headers:
            return 401, {"Content-Type": "application/json"}, b'{"exception_message": "Unauthorized"}'
        return 200, {"Content-Type": "application/json"}, b'"3.9.1"'
    return LocalHTTPServer(handle)


@pytest.mark.parametrize("auth_on", [True, False])
def test_the_run_detects_an_authenticating_server(auth_on: bool) -> None:
    with _prefect_like(auth_on) as server, temporary_settings({PREFECT_API_URL: f"{server.base_url}/api"}):
        assert _server_requires_auth() is auth_on
        assert [r.path for r in server.requests] == ["/api/admin/version"]
        assert "authorization" not in server.requests[0].headers


def test_an_unreachable_server_counts_as_unauthenticated() -> None:
    from tests.helpers.http_receiver import free_port

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        assert _server_requires_auth() is False
