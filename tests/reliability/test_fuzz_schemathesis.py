"""Schemathesis against the receiver's own OpenAPI schema: bodies that conform (positive) and bodies that
violate it (negative) for every operation, sent in-process with valid credentials (a Sentry body is
signed after generation). Same contract as the hypothesis fuzzing: no 5xx, clear 4xx, nothing half-stored."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlencode
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode

from k8s_runbooks.alerts.app import create_app
from k8s_runbooks.alerts.auth import sentry_signature
from k8s_runbooks.alerts.spool import Spool
from tests.reliability.conftest import AUTH, SENTRY_SECRET, TALLY, TOKEN, AsgiClient, fuzz_settings, make_router
from tests.reliability.receiver_checks import check, check_error_body, snapshot


def _tighten(node: Any) -> Any:
    """The schema with its abuse bounds (64 KiB strings, 10,000 alerts, 128 labels) cut to small sizes:
    drawing values near those bounds costs seconds per case and tests nothing the size-limit cases of
    test_fuzz_receiver don't. Everything else (types, enums, required fields, formats) stays."""
    if isinstance(node, dict):
        out = {k: _tighten(v) for k, v in node.items()}
        for key, cap in (("maxLength", 40), ("maxItems", 3), ("maxProperties", 4)):
            if key in out:
                out[key] = min(out[key], cap)
        if out.get("type") == "string" and "maxLength" not in out and "format" not in out and "enum" not in out:
            out["maxLength"] = 40
        if out.get("type") == "array" and "maxItems" not in out:
            out["maxItems"] = 3
        if out.get("type") == "object" and "maxProperties" not in out and "properties" not in out:
            out["maxProperties"] = 4
        return out
    if isinstance(node, list):
        return [_tighten(v) for v in node]
    return node


def _openapi() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "schema.sqlite3")
        try:
            return _tighten(create_app(make_router(), spool, auth_config=AUTH).openapi())
        finally:
            spool.close()


SCHEMA = schemathesis.openapi.from_dict(_openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Part of the budget per operation and mode: the three webhooks get most of it; GETs have little to vary.
SHARES = {"POST": 0.03, "GET": 0.005}


def _body(kwargs: dict[str, Any]) -> bytes:
    if "json" in kwargs:
        return json.dumps(kwargs["json"], ensure_ascii=False).encode("utf-8", "surrogatepass")
    data = kwargs.get("data", b"")
    if isinstance(data, dict):  # a form body (the Slack interactions endpoint)
        return urlencode(data, doseq=True).encode("utf-8", "surrogatepass")
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data or b"")


def _run(client: AsgiClient, spool: Spool, case: Any) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://receiver", headers={"Authorization": f"Bearer {TOKEN}"})
    path = case.formatted_path
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() not in ("content-length", "connection", "accept-encoding")}
    body = _body(kwargs)
    if path.endswith("/sentry"):
        headers["Sentry-Hook-Signature"] = sentry_signature(body, SENTRY_SECRET)
        headers["Sentry-Hook-Resource"] = "event_alert"
    before = snapshot(spool)
    try:
        resp = client.request(case.method, path, content=body if case.method == "POST" else None, headers=headers,
                              params=kwargs.get("params") or None)
    except UnicodeEncodeError:
        return  # a header value no HTTP client can send
    if case.method == "POST":
        check(resp, spool, before, path, body)
    else:
        assert resp.status_code < 500 and snapshot(spool) == before, (path, resp.status_code, resp.text[:300])
        if resp.status_code >= 400:
            check_error_body(resp)
        elif path == "/healthz":
            assert resp.json()["status"] == "ok"
    TALLY[f"receiver schemathesis {case.method} {path}"] += 1


def _make(operation: Any, mode: GenerationMode) -> Any:
    share = SHARES[operation.method.upper()]

    @fuzz_settings(share)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(receiver: tuple[AsgiClient, Spool], case: Any) -> None:
        _run(*receiver, case)

    return run


def _ids() -> list[tuple[Any, GenerationMode]]:
    # GETs take no input at all, so there is nothing to violate: positive only.
    return [(op, mode) for op in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            if op.method.upper() == "POST" or mode is GenerationMode.POSITIVE]


@pytest.mark.parametrize(("operation", "mode"), _ids(), ids=[f"{op.method.upper()} {op.path} {mode.value}" for op, mode in _ids()])
def test_openapi_operation(receiver: tuple[AsgiClient, Spool], operation: Any, mode: GenerationMode) -> None:
    _make(operation, mode)(receiver)

