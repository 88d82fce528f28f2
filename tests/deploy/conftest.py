"""Deployment-level fixtures: the session sandbox (which registers the runbook deployments, runs the Runner and
the alert receiver) and a Prefect client pointed at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import Sandbox


@pytest.fixture(scope="session")
def prefect_sandbox(sandbox_only: Sandbox) -> Sandbox:
    if not sandbox_only.prefect_api_url:
        pytest.skip("the sandbox runs without Prefect")
    return sandbox_only


@pytest.fixture
def client(prefect_sandbox: Sandbox) -> Iterator[SyncPrefectClient]:
    with temporary_settings(updates={PREFECT_API_URL: prefect_sandbox.prefect_api_url}):
        with get_client(sync_client=True) as c:
            yield c


def runs_of(client: SyncPrefectClient, deployment: str, **filters: Any) -> list[FlowRun]:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
        flow_run_filter=FlowRunFilter(**filters) if filters else None, limit=200,
    )


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def wait_final(client: SyncPrefectClient, run_id: UUID, timeout_s: float = 240) -> FlowRun:
    def final() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return wait_for(f"flow run {run_id} to finish", final, timeout_s)
