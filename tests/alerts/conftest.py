"""Shared helpers of the alert receiver tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from k8s_runbooks.alerts.app import AuthConfig, create_app
from k8s_runbooks.alerts.routing import Router, load_routes
from k8s_runbooks.alerts.spool import Spool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PAYLOADS = HERE / "payloads"
ROUTES = REPO / "deployments" / "alert-routes.yaml"
TOKEN = "s3cret-token"
SENTRY_SECRET = "sentry-client-secret"


def payload(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def payload_bytes(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


@pytest.fixture()
def router() -> Router:
    return load_routes(ROUTES)


@pytest.fixture()
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.sqlite3")
    yield s
    s.close()


@pytest.fixture()
def client(router: Router, spool: Spool) -> Iterator[TestClient]:
    """The real app with auth on and no dispatcher (dispatch is tested against a real Prefect server)."""
    app = create_app(
        router, spool, max_body_bytes=64 * 1024,
        auth_config=AuthConfig(token=SecretStr(TOKEN), grafana_basic_user="grafana",
                               grafana_basic_password=SecretStr("grafana-pw"), sentry_secret=SecretStr(SENTRY_SECRET)),
    )
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Prefect server with the pod-crash and high-latency deployments (stubs with the runbooks' names and
    parameter models), shared by the receiver tests of the session. Imported lazily: the other alert tests do
    not pay for Prefect's import."""
    from tests.alerts.prefect_harness import PrefectServer
    from tests.conftest import free_ports

    server = PrefectServer(tmp_path_factory.mktemp("prefect"), free_ports(1)[0])
    server.start()
    try:
        server.register()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def receiver(prefect_server: Any, tmp_path: Path) -> Iterator[Any]:
    """The receiver as a real process against `prefect_server`, with its own spool."""
    from tests.alerts.prefect_harness import SENTRY_SECRET as SECRET
    from tests.alerts.prefect_harness import TOKEN as BEARER
    from tests.alerts.prefect_harness import Receiver
    from tests.conftest import free_ports

    port = free_ports(1)[0]
    env = {**prefect_server.env(), "K8S_RUNBOOKS_RECEIVER_TOKEN": BEARER, "K8S_RUNBOOKS_SENTRY_HOOK_SECRET": SECRET,
           "K8S_RUNBOOKS_RECEIVER_DISPATCH_BACKOFF_MAX_SECONDS": "1"}
    rec = Receiver(f"http://127.0.0.1:{port}", tmp_path / "spool.sqlite3", env, port, tmp_path / "receiver.log")
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()
        if prefect_server.proc is None or prefect_server.proc.poll() is not None:
            prefect_server.start()  # a failed outage test must not leave the server down for the next test
        print((tmp_path / "receiver.log").read_text()[-3000:])
