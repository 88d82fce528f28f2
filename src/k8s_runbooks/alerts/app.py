"""The receiver's ASGI app. Request path: size check, auth, parse, route, one spool transaction, 200.

Everything slow (Prefect calls, events) happens in the dispatcher thread. Every rejection is a JSON 4xx
`{"error": "...", "detail": ...}`; a spool that cannot be written answers 503 so the sender retries.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from k8s_runbooks.alerts import auth
from k8s_runbooks.alerts.dispatcher import Dispatcher
from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks.alerts.payloads import Alert, AlertmanagerPayload, GrafanaPayload, SentryIssueAlertPayload, Source
from k8s_runbooks.alerts.routing import Router
from k8s_runbooks.alerts.spool import Spool

log = logging.getLogger("k8s_runbooks.alerts")


@dataclass(frozen=True)
class AuthConfig:
    token: SecretStr | None = None
    grafana_basic_user: str | None = None
    grafana_basic_password: SecretStr | None = None
    sentry_secret: SecretStr | None = None

    def describe(self) -> dict[str, str]:
        grafana = [s for s, on in (("bearer", self.token), ("basic", self.grafana_basic_user and self.grafana_basic_password)) if on]
        return {
            "alertmanager": "bearer" if self.token else "off",
            "grafana": "+".join(grafana) or "off",
            "sentry": "hmac-sha256" if self.sentry_secret else "off",
        }


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": error, "detail": detail}, headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload too large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload too large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_json_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported media type", f"expected Content-Type: application/json, got {ctype or 'none'!r}")


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ApiError(400, "malformed JSON", errors[0]["msg"]) from None
        detail = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]} for e in errors[:20]
        ]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3])
        raise ApiError(422, f"invalid {model.__name__} payload: {summary}", detail) from None


def _openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def create_app(
    router: Router,
    spool: Spool,
    *,
    auth_config: AuthConfig | None = None,
    max_body_bytes: int = 1_048_576,
    metrics: ReceiverMetrics | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    authc = auth_config or AuthConfig()
    metrics = metrics or ReceiverMetrics()
    metrics.bind_depth(spool.pending_count, spool.outbox_count)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if dispatcher:
            dispatcher.start()
        try:
            yield
        finally:
            if dispatcher:
                dispatcher.stop()

    app = FastAPI(
        title="k8s-runbooks alert receiver",
        description="Durable webhook receiver: alerts are spooled, routed and turned into Prefect deployment runs.",
        version="1",
        lifespan=lifespan,
    )
    app.state.spool, app.state.router, app.state.metrics, app.state.dispatcher = spool, router, metrics, dispatcher

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()[:20]]
        return _error(422, "invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail).lower(), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error in the alert receiver")
        return _error(500, "internal error", f"{type(exc).__name__}; see the receiver log")

    def ingest(source: Source, alerts: list[Alert]) -> dict[str, Any]:
        items = [(a, router.decide(a) if a.status == "firing" else None) for a in alerts]
        try:
            results = spool.record(items, time.time())
        except sqlite3.Error as exc:
            log.error("cannot write the alert spool %s: %s", spool.path, exc)
            raise ApiError(503, "spool unavailable", "the alert could not be stored; retry later",
                           {"Retry-After": "5"}) from None
        out = []
        queued = False
        for (alert, decision), (outcome, _row) in zip(items, results):
            metrics.received.labels(source, alert.status).inc()
            if outcome in ("duplicate", "resolved-duplicate"):
                metrics.deduplicated.labels(source).inc()
            elif outcome == "ignored":
                metrics.ignored.labels(source).inc()
            elif outcome == "rejected":
                metrics.rejected.labels(source).inc()
            # New rows and resolutions have events in the outbox; only repeats have nothing to do.
            queued = queued or outcome not in ("duplicate", "resolved-duplicate")
            entry: dict[str, Any] = {"fingerprint": alert.fingerprint, "status": alert.status, "outcome": outcome}
            if decision is not None and decision.route:
                entry["route"] = decision.route
            if decision is not None and decision.reason and outcome in ("ignored", "rejected"):
                entry["reason"] = decision.reason
            out.append(entry)
        if queued and dispatcher:
            dispatcher.wake()
        return {"accepted": len(alerts), "alerts": out}

    async def handle(request: Request, source: Source, check_auth: Callable[[bytes], None],
                     model: type[BaseModel]) -> Response:
        started = time.perf_counter()
        code = 500
        try:
            body = await _read_body(request, max_body_bytes)
            check_auth(body)
            _check_json_content_type(request)
            payload = _parse(model, body)
            if source == "alertmanager" and payload.truncated_alerts:
                log.warning("Alertmanager truncated %d alerts of group %s (max_alerts)", payload.truncated_alerts, payload.group_key)
            result = ingest(source, payload.normalise())
            code = 200
            return _json(200, result)
        except auth.AuthError as exc:
            code = 401
            return _error(401, "unauthorized", exc.detail, {"WWW-Authenticate": exc.scheme})
        except ApiError as exc:
            code = exc.status
            return _error(exc.status, exc.error, exc.detail, exc.headers)
        finally:
            metrics.requests.labels(source, str(code)).inc()
            metrics.ack_latency.labels(source).observe(time.perf_counter() - started)

    @app.post("/v1/alerts/alertmanager", openapi_extra=_openapi_body(AlertmanagerPayload),
              summary="Alertmanager webhook (version 4)", response_model=None)
    async def alertmanager(request: Request) -> Response:
        header = request.headers.get("authorization")
        return await handle(request, "alertmanager", lambda _b: auth.check_bearer(header, authc.token), AlertmanagerPayload)

    @app.post("/v1/alerts/grafana", openapi_extra=_openapi_body(GrafanaPayload),
              summary="Grafana unified-alerting webhook contact point", response_model=None)
    async def grafana(request: Request) -> Response:
        header = request.headers.get("authorization")
        return await handle(request, "grafana", lambda _b: auth.check_bearer_or_basic(
            header, authc.token, authc.grafana_basic_user, authc.grafana_basic_password), GrafanaPayload)

    @app.post("/v1/alerts/sentry", openapi_extra=_openapi_body(SentryIssueAlertPayload),
              summary="Sentry issue-alert webhook (Sentry-Hook-Resource: event_alert)", response_model=None)
    async def sentry(request: Request) -> Response:
        signature = request.headers.get("sentry-hook-signature")
        resource = request.headers.get("sentry-hook-resource", "event_alert")
        if resource != "event_alert":
            # Installation/issue webhooks share the integration's URL: verify, acknowledge, do nothing.
            def check(body: bytes) -> None:
                auth.check_sentry_signature(body, signature, authc.sentry_secret)
                raise ApiError(202, "ignored", f"Sentry-Hook-Resource {resource!r} is not handled; only event_alert")
            return await handle(request, "sentry", check, SentryIssueAlertPayload)
        return await handle(request, "sentry", lambda b: auth.check_sentry_signature(b, signature, authc.sentry_secret),
                            SentryIssueAlertPayload)

    @app.get("/healthz", summary="Liveness, spool depth, dispatcher state")
    async def healthz() -> Response:
        body = {
            "status": "ok",
            "spool": {"path": str(spool.path), "pending": spool.pending_count(), "events_pending": spool.outbox_count()},
            "dispatcher": None if dispatcher is None else {
                "alive": dispatcher.alive, "prefect_api_ok": dispatcher.api_ok, "last_error": dispatcher.last_error},
            "routes": {"file": router.source, "count": len(router.config.routes)},
            "auth": authc.describe(),
        }
        if dispatcher is not None and not dispatcher.alive:
            body["status"] = "degraded"
            return _json(503, body)
        return _json(200, body)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (AlertmanagerPayload, GrafanaPayload, SentryIssueAlertPayload):
            model_schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
