"""CI's Postgres step (`K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE=postgres`): the sandbox's Prefect server really runs on
the Postgres cluster the sandbox started from Debian's package, so the deployment and alert-path tests before
this one ran on it. Skipped in the SQLite run."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.conftest import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.skipif(os.environ.get("K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE") != "postgres",
                    reason="the SQLite run; CI's Postgres step runs it")
def test_the_prefect_server_stores_its_runs_in_postgres(sandbox_only: Sandbox) -> None:
    import asyncpg

    out = sandbox_only.cli("sandbox", "status")
    assert "postgres" in out.stdout and "up" in out.stdout.split("postgres", 1)[1].splitlines()[0], out.stdout
    port = int(sandbox_only.env["K8S_RUNBOOKS_SANDBOX_POSTGRES_PORT"])

    async def counts() -> tuple[int, int]:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="prefect", timeout=10)
        try:
            return (await conn.fetchval("SELECT count(*) FROM deployment"), await conn.fetchval("SELECT count(*) FROM flow_run"))
        finally:
            await conn.close()

    deployments, runs = asyncio.run(counts())
    assert deployments >= 5 and runs >= 1, (deployments, runs)
