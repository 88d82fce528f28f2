"""`prefect server start` for the sandbox, with every SQLite write transaction begun IMMEDIATE.

Why: Prefect's embedded SQLite server opens most write transactions DEFERRED (only `with_for_update`
ones are IMMEDIATE). A deferred transaction that has read and then wants to write, while another
connection committed in between, gets SQLITE_BUSY at once: SQLite cannot wait it out (the busy handler
and Prefect's 60 s `busy_timeout` are skipped to avoid a deadlock), so the API answers HTTP 503
"database is locked". The Prefect UI does not retry, so a create-run or a resume click fails (measured
here: 3 of 10 browser scenarios while a runbook run wrote logs and artifacts). `BEGIN IMMEDIATE` takes
the write lock up front, so concurrent writers queue on `busy_timeout` instead of failing; WAL readers
are not blocked. With Postgres (see deployments/README.md) none of this applies.

    python -m k8s_runbooks.sandbox.prefect_server --host 127.0.0.1 --port 4200
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any


def patch_sqlite_begin_immediate() -> None:
    from prefect.server.database import configurations as conf

    @asynccontextmanager
    async def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> AsyncGenerator[Any, None]:
        token = conf.SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            conf.SQLITE_BEGIN_MODE.reset(token)

    conf.AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    patch_sqlite_begin_immediate()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]
    result = app()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
