"""Fault switch of the sandbox API (errors, latency, dropped connections) and the request audit."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError

_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass
class FaultConfig:
    error_rate: float = 0.0
    status: int = 500
    retry_after: int | None = None
    latency_ms: int = 0
    drop_rate: float = 0.0
    path_regex: str | None = None
    methods: list[str] | None = None
    count: int | None = None
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, body: Any) -> "FaultConfig":
        if not isinstance(body, dict):
            raise ApiError.bad_request("fault config must be a JSON object")
        unknown = set(body) - {"error_rate", "status", "retry_after", "latency_ms", "drop_rate", "path_regex",
                               "methods", "count"}
        if unknown:
            raise ApiError.bad_request(f"unknown fault settings: {sorted(unknown)}")
        try:
            cfg = cls(
                error_rate=float(body.get("error_rate", 0.0)),
                status=int(body.get("status", 500)),
                retry_after=None if body.get("retry_after") is None else int(body["retry_after"]),
                latency_ms=int(body.get("latency_ms", 0)),
                drop_rate=float(body.get("drop_rate", 0.0)),
                path_regex=body.get("path_regex"),
                methods=[str(m).upper() for m in body["methods"]] if body.get("methods") else None,
                count=None if body.get("count") is None else int(body["count"]),
            )
            cfg._pattern = re.compile(cfg.path_regex) if cfg.path_regex else None
        except (TypeError, ValueError, re.error) as exc:
            raise ApiError.bad_request(f"invalid fault config: {exc}") from None
        if not (0 <= cfg.error_rate <= 1 and 0 <= cfg.drop_rate <= 1):
            raise ApiError.bad_request("error_rate and drop_rate must be between 0 and 1")
        if cfg.status not in _REASONS or cfg.latency_ms < 0 or (cfg.count is not None and cfg.count < 1):
            raise ApiError.bad_request("status must be 429, 500, 503 or 504; latency_ms >= 0; count >= 1")
        return cfg

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "status": self.status, "retry_after": self.retry_after,
                "latency_ms": self.latency_ms, "drop_rate": self.drop_rate, "path_regex": self.path_regex,
                "methods": self.methods, "count": self.count}


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0
    drop: bool = False
    error: ApiError | None = None


class FaultSwitch:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config: FaultConfig | None = None
        self._rng = random.Random(seed)

    def set(self, body: Any) -> FaultConfig:
        cfg = FaultConfig.parse(body)
        with self._lock:
            self._config = cfg
        return cfg

    def clear(self) -> None:
        with self._lock:
            self._config = None

    def current(self) -> dict[str, Any] | None:
        with self._lock:
            return self._config.to_json() if self._config else None

    def decide(self, method: str, path: str) -> FaultDecision:
        with self._lock:
            cfg = self._config
            if cfg is None:
                return FaultDecision()
            if cfg.methods and method.upper() not in cfg.methods:
                return FaultDecision()
            if cfg._pattern and not cfg._pattern.search(path):
                return FaultDecision()
            latency = cfg.latency_ms / 1000.0
            drop = cfg.drop_rate > 0 and self._rng.random() < cfg.drop_rate
            fail = not drop and cfg.error_rate > 0 and self._rng.random() < cfg.error_rate
            if (drop or fail) and cfg.count is not None:
                cfg.count -= 1
                if cfg.count <= 0:
                    self._config = None
        error = None
        if fail:
            error = ApiError(cfg.status, _REASONS[cfg.status], f"sandbox fault injection: {_REASONS[cfg.status]}",
                             retry_after=cfg.retry_after)
        return FaultDecision(latency_s=latency, drop=drop, error=error)


class Audit:
    """Counts of (verb, resource, subresource, namespace) in RBAC terms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str, str]] = Counter()

    def record(self, verb: str, resource: str, subresource: str | None, namespace: str | None) -> None:
        with self._lock:
            self._counts[(verb, resource, subresource or "", namespace or "")] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            items = sorted(self._counts.items())
        return {"requests": [{"verb": v, "resource": r, "subresource": s, "namespace": n, "count": c}
                             for (v, r, s, n), c in items]}
