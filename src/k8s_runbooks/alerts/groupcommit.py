"""Group commit on the event loop: the spool writes of requests handled in the same loop iteration share one
SQLite transaction (`Spool.record_many`), and each request is answered only after that COMMIT returned.

Why on the loop, not in a writer thread: with WAL and synchronous=NORMAL a commit is a write into the page
cache (tens of microseconds), cheaper than handing work to a thread and back through the GIL. Under
synchronous=FULL the commit's fsync blocks the loop, but once per group, not once per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from k8s_runbooks.alerts.spool import Items, Outcome, Spool

MAX_GROUP = 512  # bounds the transaction (and the wait of the first request in it)


class GroupCommit:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._queue: list[tuple[Items, float, asyncio.Future[list[tuple[Outcome, int]]]]] = []
        self._scheduled = False
        self.groups = 0  # transactions committed (tests and benchmarks read group sizes from these)
        self.requests = 0

    async def record(self, items: Items, now: float) -> list[tuple[Outcome, int]]:
        """Store one notification durably; (outcome, row id) per alert. Raises what storing it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[tuple[Outcome, int]]] = loop.create_future()
        self._queue.append((list(items), now, future))
        if not self._scheduled:
            self._scheduled = True
            # call_soon: the flush runs after the request handlers already scheduled in this iteration,
            # so every request that is ready joins the group.
            loop.call_soon(self._flush)
        elif len(self._queue) >= MAX_GROUP:
            self._flush()
        return await future

    def _flush(self) -> None:
        group, self._queue = self._queue, []
        self._scheduled = False
        if not group:
            return
        try:
            results: list[Any] = self.spool.record_many([(items, now) for items, now, _ in group])
        except Exception as exc:  # noqa: BLE001 - nothing of the group was stored: every request gets the error
            results = [exc] * len(group)
        else:
            self.groups += 1
            self.requests += len(group)
        for (_, _, future), result in zip(group, results):
            if future.done():  # the request was cancelled (client gone); its alerts are stored anyway
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
