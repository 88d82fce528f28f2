"""Fault switch of the sandbox API (errors, 429 + Retry-After, latency, dropped connections, watch
disconnects) and the request audit.

`POST /sandbox/faults` takes one rule (the JSON object below) or `{"rules": [rule, ...]}`; every request
that matches a rule (`methods`, `path_regex`) gets that rule's latency, and the first rule that fires decides
the request's fate. A rule's `count` bounds how many errors/drops it injects before it removes itself.

  error_rate + status (+ retry_after)   answer a Status error (429/500/503/504, with a Retry-After header)
  latency_ms                            sleep before serving
  drop_rate + drop_phase                close the connection without an answer: "request" (default) drops it
                                        unserved; "response" serves it (a write is applied) and loses the answer,
                                        the ambiguous case a client cannot tell from the first
  watch_disconnect_after_s              cut every matching watch stream (no final chunk) after that many seconds

`GET /sandbox/faults/injected` counts what was injected since the last `DELETE` of it, by kind.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from k8s_runbooks.sandbox.errors import ApiError

_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_FIELDS = {"error_rate", "status", "retry_after", "latency_ms", "drop_rate", "drop_phase", "path_regex", "methods",
           "count", "watch_disconnect_after_s"}
MAX_RULES = 16


@dataclass
class FaultConfig:
    error_rate: float = 0.0
    status: int = 500
    retry_after: int | None = None
    latency_ms: int = 0
    drop_rate: float = 0.0
    drop_phase: str = "request"
    path_regex: str | None = None
    methods: list[str] | None = None
    count: int | None = None
    watch_disconnect_after_s: float | None = None
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, body: Any) -> "FaultConfig":
        if not isinstance(body, dict):
            raise ApiError.bad_request("fault config must be a JSON object")
        unknown = set(body) - _FIELDS
        if unknown:
            raise ApiError.bad_request(f"unknown fault settings: {sorted(unknown)}")
        try:
            cfg = cls(
                error_rate=float(body.get("error_rate", 0.0)),
                status=int(body.get("status", 500)),
                retry_after=None if body.get("retry_after") is None else int(body["retry_after"]),
                latency_ms=int(body.get("latency_ms", 0)),
                drop_rate=float(body.get("drop_rate", 0.0)),
                drop_phase=str(body.get("drop_phase", "request")),
                path_regex=body.get("path_regex"),
                methods=[str(m).upper() for m in body["methods"]] if body.get("methods") else None,
                count=None if body.get("count") is None else int(body["count"]),
                watch_disconnect_after_s=(None if body.get("watch_disconnect_after_s") is None
                                          else float(body["watch_disconnect_after_s"])),
            )
            cfg._pattern = re.compile(cfg.path_regex) if cfg.path_regex else None
        except (TypeError, ValueError, re.error) as exc:
            raise ApiError.bad_request(f"invalid fault config: {exc}") from None
        if not (0 <= cfg.error_rate <= 1 and 0 <= cfg.drop_rate <= 1):
            raise ApiError.bad_request("error_rate and drop_rate must be between 0 and 1")
        if cfg.status not in _REASONS or cfg.latency_ms < 0 or (cfg.count is not None and cfg.count < 1):
            raise ApiError.bad_request("status must be 429, 500, 503 or 504; latency_ms >= 0; count >= 1")
        if cfg.drop_phase not in ("request", "response"):
            raise ApiError.bad_request("drop_phase must be 'request' or 'response'")
        if cfg.watch_disconnect_after_s is not None and cfg.watch_disconnect_after_s <= 0:
            raise ApiError.bad_request("watch_disconnect_after_s must be > 0")
        return cfg

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        return not (self._pattern and not self._pattern.search(path))

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "status": self.status, "retry_after": self.retry_after,
                "latency_ms": self.latency_ms, "drop_rate": self.drop_rate, "drop_phase": self.drop_phase,
                "path_regex": self.path_regex, "methods": self.methods, "count": self.count,
                "watch_disconnect_after_s": self.watch_disconnect_after_s}


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0
    drop: bool = False
    drop_response: bool = False  # serve the request, then drop the connection instead of answering
    error: ApiError | None = None


class FaultSwitch:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultConfig] = []
        self._rng = random.Random(seed)
        self._injected: Counter[str] = Counter()

    def set(self, body: Any) -> FaultConfig | list[FaultConfig]:
        if isinstance(body, dict) and "rules" in body:
            if set(body) != {"rules"} or not isinstance(body["rules"], list) or not 0 < len(body["rules"]) <= MAX_RULES:
                raise ApiError.bad_request(f'"rules" must be the only key and a list of 1..{MAX_RULES} fault objects')
            rules = [FaultConfig.parse(r) for r in body["rules"]]
            with self._lock:
                self._rules = rules
            return rules
        cfg = FaultConfig.parse(body)
        with self._lock:
            self._rules = [cfg]
        return cfg

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def current(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._rules:
                return None
            if len(self._rules) == 1:
                return self._rules[0].to_json()
            return {"rules": [r.to_json() for r in self._rules]}

    def injected(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._injected.items()))

    def reset_injected(self) -> None:
        with self._lock:
            self._injected.clear()

    def _spend(self, cfg: FaultConfig) -> None:
        """Count one injection against the rule's budget (lock held); an exhausted rule removes itself."""
        if cfg.count is not None:
            cfg.count -= 1
            if cfg.count <= 0:
                self._rules = [r for r in self._rules if r is not cfg]

    def decide(self, method: str, path: str) -> FaultDecision:
        with self._lock:
            latency_ms, drop, drop_response, error_cfg = 0, False, False, None
            for cfg in list(self._rules):
                if not cfg.matches(method, path):
                    continue
                latency_ms = max(latency_ms, cfg.latency_ms)
                if drop or error_cfg is not None:
                    continue
                if cfg.drop_rate > 0 and self._rng.random() < cfg.drop_rate:
                    drop, drop_response = True, cfg.drop_phase == "response"
                    self._injected["drop_" + cfg.drop_phase] += 1
                    self._spend(cfg)
                elif cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
                    error_cfg = cfg
                    self._injected[f"error_{cfg.status}"] += 1
                    self._spend(cfg)
            if latency_ms:
                self._injected["latency"] += 1
        error = None
        if error_cfg is not None:
            reason = _REASONS[error_cfg.status]
            error = ApiError(error_cfg.status, reason, f"sandbox fault injection: {reason}", retry_after=error_cfg.retry_after)
        return FaultDecision(latency_s=latency_ms / 1000.0, drop=drop and not drop_response,
                             drop_response=drop_response, error=error)

    def watch_deadline(self, path: str) -> float | None:
        """Seconds after which a watch of `path` is cut, or None (the shortest of the matching rules)."""
        with self._lock:
            limits = [r.watch_disconnect_after_s for r in self._rules
                      if r.watch_disconnect_after_s is not None and r.matches("GET", path)]
        return min(limits) if limits else None

    def watch_cut(self) -> None:
        with self._lock:
            self._injected["watch_disconnect"] += 1


class Audit:
    """Counts of (verb, resource, subresource, namespace, API group) in RBAC terms (see k8s_runbooks.rbac)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str, str, str, str]] = Counter()

    def record(self, verb: str, resource: str, subresource: str | None, namespace: str | None, group: str = "",
               user: str = "") -> None:
        with self._lock:
            self._counts[(verb, resource, subresource or "", namespace or "", group, user)] += 1

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            items = sorted(self._counts.items())
        return {"requests": [{"verb": v, "resource": r, "subresource": s, "namespace": n, "group": g, "user": u,
                              "count": c} for (v, r, s, n, g, u), c in items]}
