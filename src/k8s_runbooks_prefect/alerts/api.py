"""How the dispatcher tells a Prefect API outage (retry the whole pass later) from an answer (act on it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx


class ApiUnavailable(Exception):
    """The Prefect API cannot be reached right now (connection error, timeout, 5xx, 429)."""


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def detail(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return f"HTTP {response.status_code}: {response.text[:500]}"
        except Exception:  # a streamed/closed response has no text
            return f"HTTP {response.status_code}"
    return f"{type(exc).__name__}: {exc}"


def transient_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


@contextmanager
def api_call() -> Iterator[None]:
    """Connection errors, timeouts and 5xx/408/429 become ApiUnavailable; other HTTP errors pass through."""
    try:
        yield
    except (httpx.TransportError, OSError, TimeoutError) as exc:
        raise ApiUnavailable(detail(exc)) from None
    except httpx.HTTPStatusError as exc:
        if transient_status(status_of(exc) or 0):
            raise ApiUnavailable(detail(exc)) from None
        raise
