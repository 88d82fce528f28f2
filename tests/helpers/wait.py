"""wait_for: poll until a check returns something truthy, or fail saying what was awaited and what was seen last
(the one shared `wait_for` for new tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_for(fn: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.2,
             ignore: tuple[type[BaseException], ...] = (OSError, ValueError, httpx.HTTPError)) -> Any:
    """Call `fn` until it returns something truthy and return that. Errors in `ignore` (a server still
    starting) count as "not yet"; after `timeout` fail with the last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
