"""A timed Prometheus client over prometheus-api-client, with errors mapped to our hierarchy.

prometheus-api-client (`PrometheusConnect`) does the HTTP call and unpacks `data.result`; we give it
- a `timeout` (it passes one to every `requests` call) and Prometheus's own `timeout` query parameter,
- no urllib3 retries (`Retry(total=0)`): retrying is the Prefect task's job, with backoff and jitter,
- a `requests` response hook that turns a non-200 answer into TransientError / InvalidInput with
  Prometheus's own error text (the library would raise a bare exception with the raw body).

"No data" is a result, not an error: `QueryResult.samples == []` (see `no_data`). Callers must never
read it as healthy. Prometheus being unreachable is always a TransientError, never an empty result.
"""

from __future__ import annotations

import math
import operator
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import requests
from urllib3.util.retry import Retry

from k8s_runbooks.errors import ConfigError, InvalidInput, RunbookError, TransientError, from_http_status
from k8s_runbooks.models import QueryResult, RangeSeries, ThresholdCheck

Comparison = Literal[">", ">=", "<", "<=", "=="]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


def no_data(result: QueryResult) -> bool:
    """True when the query matched no series (or only NaN samples, e.g. 0/0): unknown, not healthy."""
    return not any(not math.isnan(value) for _, value in result.samples)


def _error_from_response(response: requests.Response) -> RunbookError:
    try:
        body = response.json()
        detail = f"{body.get('errorType', 'error')}: {body.get('error', '')}"
    except ValueError:
        detail = response.text[:300]
    status = response.status_code
    if status in (400, 422):
        # 400 bad_data (parse error), 422 execution error (e.g. many-to-many matching): the query is wrong.
        return InvalidInput(f"Prometheus rejected the query (HTTP {status}): {detail}")
    if status == 503:
        # Prometheus answers 503 for query timeouts/cancellation and while starting up.
        return TransientError(f"Prometheus is unavailable or the query timed out (HTTP 503): {detail}")
    retry_after = response.headers.get("Retry-After")
    return from_http_status(
        status, "Prometheus query", detail, retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None
    )


def _raise_for_prometheus(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code != 200:
        raise _error_from_response(response)


class PromClient:
    """Instant and range queries against one Prometheus. Thread-safe enough for Prefect's thread pool
    (requests sessions are shared read-mostly); create one per flow run or task."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid Prometheus URL {url!r}", hint="set K8S_RUNBOOKS_PROMETHEUS_URL to http(s)://host:port")
        # Imported here: importing k8s_runbooks.prom must not pull requests/urllib3 for PromQL builders.
        from prometheus_api_client import PrometheusConnect

        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        session = requests.Session()
        session.hooks["response"].append(_raise_for_prometheus)
        # read=False: a read timeout surfaces as requests.ReadTimeout (not wrapped in a ConnectionError).
        self._conn = PrometheusConnect(
            url=self.url, session=session, timeout=self.timeout, retry=Retry(total=0, read=False, raise_on_status=False)
        )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "PromClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- queries
    def instant(self, query: str, at: datetime | None = None) -> QueryResult:
        at = _aware(at) if at else datetime.now(timezone.utc)
        params = {"time": f"{at.timestamp():.3f}", "timeout": f"{self.timeout:g}s"}
        data = self._call(lambda: self._conn.custom_query(query, params=params, timeout=self.timeout))
        return QueryResult(query=query, at=at, samples=_instant_samples(data))

    def range(self, query: str, start: datetime, end: datetime, step: str | float) -> RangeSeries:
        start, end = _aware(start), _aware(end)
        if end < start:
            raise InvalidInput(f"range query end {end.isoformat()} is before start {start.isoformat()}")
        step_seconds = _step_seconds(step)
        data = self._call(
            lambda: self._conn.custom_query_range(
                query, start, end, f"{step_seconds:g}", params={"timeout": f"{self.timeout:g}s"}, timeout=self.timeout
            )
        )
        series = [
            (dict(item.get("metric", {})), [(float(ts), float(v)) for ts, v in item.get("values", [])]) for item in data
        ]
        return RangeSeries(query=query, start=start, end=end, step_seconds=step_seconds, series=series)

    def check_threshold(
        self, name: str, query: str, threshold: float, comparison: Comparison = ">", at: datetime | None = None
    ) -> ThresholdCheck:
        """Evaluate `query` now; breached if ANY sample compares true. `value` is the worst sample
        (max for > / >=, min for < / <=). No samples (or only NaN) → no_data=True, breached=False, value=None."""
        return evaluate_threshold(name, self.instant(query, at=at), threshold, comparison)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RunbookError:
            raise
        except requests.Timeout as exc:
            raise TransientError(
                f"Prometheus at {self.url} did not answer within {self.timeout:g}s", hint="is it overloaded?"
            ) from exc
        except requests.ConnectionError as exc:
            raise TransientError(
                f"cannot connect to Prometheus at {self.url}",
                hint="is Prometheus running? check K8S_RUNBOOKS_PROMETHEUS_URL",
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(f"Prometheus request failed: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.url} did not answer like the Prometheus HTTP API ({type(exc).__name__})",
                hint="check K8S_RUNBOOKS_PROMETHEUS_URL points at Prometheus itself",
            ) from exc


def evaluate_threshold(name: str, result: QueryResult, threshold: float, comparison: Comparison) -> ThresholdCheck:
    if comparison not in _COMPARE:
        raise InvalidInput(f"invalid comparison {comparison!r}", hint="use one of > >= < <= ==")
    values = [v for _, v in result.samples if not math.isnan(v)]
    if not values:
        return ThresholdCheck(
            name=name, query=result.query, value=None, threshold=threshold, comparison=comparison, breached=False, no_data=True
        )
    compare = _COMPARE[comparison]
    breaching = [v for v in values if compare(v, threshold)]
    if comparison in (">", ">="):
        value = max(values)
    elif comparison in ("<", "<="):
        value = min(values)
    else:
        value = breaching[0] if breaching else values[0]
    return ThresholdCheck(
        name=name, query=result.query, value=value, threshold=threshold, comparison=comparison, breached=bool(breaching)
    )


def _instant_samples(data: Any) -> list[tuple[dict[str, str], float]]:
    # Vector results are a list of {"metric", "value"}; scalar results are a bare [ts, "value"].
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
        return [({}, float(data[1]))]
    return [(dict(item.get("metric", {})), float(item["value"][1])) for item in data]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _step_seconds(step: str | float) -> float:
    from k8s_runbooks.prom.promql import duration_seconds

    seconds = duration_seconds(step) if isinstance(step, str) else float(step)
    if not seconds > 0:
        raise InvalidInput(f"invalid range step {step!r}", hint="use a positive duration such as '15s'")
    return seconds
