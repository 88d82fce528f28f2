"""Shared pieces of the reliability suite: the fuzz case budget and a tally of the cases actually run.

`K8S_RUNBOOKS_FUZZ_CASES` (default 12000) is the budget of generated requests to the alert receiver
(hypothesis + schemathesis together); runbook parameters and Markdown runbooks get a fifth of it each on
top. It is an upper bound: hypothesis does not run an example it already generated, so fewer requests
go out (8,872 of a 10,000 budget, measured) — the default is set so that a full run sends at least the
10,000 cases the suite promises. CI runs the default; `K8S_RUNBOOKS_FUZZ_CASES=200 pytest tests/reliability`
is a quick local round. The terminal summary prints what actually ran, for RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from k8s_runbooks.alerts.app import AuthConfig, create_app
from k8s_runbooks.alerts.routing import Router, load_routes
from k8s_runbooks.alerts.spool import Spool
from tests.reliability.tally import TALLY

REPO = Path(__file__).resolve().parents[2]
ROUTES = REPO / "deployments" / "alert-routes.yaml"
TOKEN = "fuzz-bearer-token"
GRAFANA_USER, GRAFANA_PASSWORD = "grafana", "grafana-fuzz-pw"
SENTRY_SECRET = "fuzz-sentry-client-secret"
MAX_BODY = 256 * 1024

FUZZ_CASES = max(10, int(os.environ.get("K8S_RUNBOOKS_FUZZ_CASES", "12000")))


def share(fraction: float) -> int:
    """This test's part of the case budget (at least 10 examples)."""
    return max(10, int(FUZZ_CASES * fraction))


def fuzz_settings(fraction: float) -> settings:
    # No example database: runs must not depend on (or write) state left by earlier runs of other engineers.
    return settings(
        max_examples=share(fraction), deadline=None, database=None, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture, HealthCheck.large_base_example],
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.write_sep("-", "reliability fuzz cases run")
        for name, count in sorted(TALLY.items()):
            terminalreporter.write_line(f"{name}: {count}")
        receiver = sum(v for k, v in TALLY.items() if k.startswith(("receiver hypothesis", "receiver schemathesis")))
        terminalreporter.write_line(f"receiver total: {receiver} (budget K8S_RUNBOOKS_FUZZ_CASES={FUZZ_CASES})")


def make_router() -> Router:
    return load_routes(ROUTES)


AUTH = AuthConfig(token=SecretStr(TOKEN), grafana_basic_user=GRAFANA_USER,
                  grafana_basic_password=SecretStr(GRAFANA_PASSWORD), sentry_secret=SecretStr(SENTRY_SECRET))


class AsgiClient:
    """Synchronous calls into the ASGI app on one event loop (httpx.ASGITransport): about 4x cheaper per
    request than starlette's TestClient, which hops threads for every call. The receiver's lifespan only
    starts a dispatcher, and these apps have none."""

    def __init__(self, app: FastAPI) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                         base_url="http://receiver", timeout=30)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AsgiClient, Spool]]:
    """The real receiver app (auth on, real routes, real SQLite WAL spool), no dispatcher, in-process."""
    spool = Spool(tmp_path_factory.mktemp("fuzz-spool") / "spool.sqlite3")
    client = AsgiClient(create_app(make_router(), spool, auth_config=AUTH, max_body_bytes=MAX_BODY))
    yield client, spool
    client.close()
    spool.close()
