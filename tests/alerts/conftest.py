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
