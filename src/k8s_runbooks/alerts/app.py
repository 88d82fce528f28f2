"""The receiver's ASGI app. Request path: size check, auth, parse, route, spool commit (grouped with the
requests handled at the same time, see groupcommit.py), 200.

Everything slow (Prefect calls, events) happens in the dispatcher thread. Every rejection is a JSON 4xx
`{"error": "...", "detail": ...}`; a spool that cannot be written answers 503 so the sender retries.
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from k8s_runbooks.alerts import auth
from k8s_runbooks.alerts.groupcommit import GroupCommit
from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks.alerts.payloads import Alert, AlertmanagerPayload, GrafanaPayload, SentryIssueAlertPayload, Source
from k8s_runbooks.alerts.routing import Decision, Router
from k8s_runbooks.alerts.spool import Spool
from k8s_runbooks.chatops.desk import ApprovalDesk, BadInteraction
from k8s_runbooks.redact import redact

log = logging.getLogger("k8s_runbooks.alerts")


class Dispatcher(Protocol):
    """What the app needs of its dispatcher (the Prefect one is k8s_runbooks_prefect.alerts.dispatcher, outside
    the Prefect-free core): started and stopped with the app, woken when a row is queued, its state on /healthz."""

    api_ok: bool | None
    last_error: str | None

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wake(self) -> None: ...


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


Headers = dict[str, str]  # lower-case names, as ASGI gives them


def _headers(scope: dict[str, Any]) -> Headers:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload too large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad request", "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload too large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_json_content_type(headers: Headers) -> None:
    ctype = headers.get("content-type", "")
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


class _Decider:
    """Routes a firing alert when the spool asks (only new alerts); remembers the decision for the reply."""

    __slots__ = ("router", "alert", "decision")

    def __init__(self, router: Router, alert: Alert) -> None:
        self.router, self.alert = router, alert
        self.decision: Decision | None = None

    def __call__(self) -> Decision:
        if self.decision is None:
            self.decision = self.router.decide(self.alert)
        return self.decision


Reply = tuple[int, bytes, dict[str, str] | None]  # status, JSON body, extra headers


def _reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, orjson.dumps(body), headers


def _error_reply(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> Reply:
    return _reply(status, {"error": error, "detail": detail}, headers)


class ReceiverApp(FastAPI):
    """FastAPI, except that the webhook POSTs go straight to their handler (raw ASGI).

    Why: under an alert storm FastAPI's per-request machinery (middleware stack, routing, dependency
    solving, Request/Response objects) cost more CPU than parsing, routing and storing the alert together.
    The FastAPI routes stay registered with the same handlers: they document the API (OpenAPI) and answer
    whatever the fast path does not take (other methods: 405, other paths: 404).
    """

    # (not `webhooks`: FastAPI uses that name for OpenAPI webhook routes)
    webhook_handlers: dict[str, Callable[[dict[str, Any], Receive], Awaitable[Reply]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.webhook_handlers.get(scope["path"])
            if handler is not None:
                try:
                    status, body, headers = await handler(scope, receive)
                except Exception as exc:  # the same JSON 500 as the app's exception handler, details in the log
                    log.exception("unexpected error in the alert receiver")
                    status, body, headers = _error_reply(500, "internal error", f"{type(exc).__name__}; see the receiver log")
                raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
                await send({"type": "http.response.start", "status": status, "headers": raw})
                await send({"type": "http.response.body", "body": body})
                return
        await super().__call__(scope, receive, send)


MODELS: dict[Source, type[BaseModel]] = {
    "alertmanager": AlertmanagerPayload, "grafana": GrafanaPayload, "sentry": SentryIssueAlertPayload}


def _openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


# FastAPI >= 0.150's native OpenTelemetry bridge looks its providers up on every request; the receiver exports
# Prometheus metrics instead (older FastAPI has no such argument).
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def create_app(
    router: Router,
    spool: Spool,
    *,
    auth_config: AuthConfig | None = None,
    max_body_bytes: int = 1_048_576,
    metrics: ReceiverMetrics | None = None,
    dispatcher: Dispatcher | None = None,
    approvals: ApprovalDesk | None = None,
) -> FastAPI:
    authc = auth_config or AuthConfig()
    metrics = metrics or ReceiverMetrics()
    metrics.bind_depth(spool.pending_count, spool.outbox_count, spool.unrecorded_count)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if dispatcher:
            dispatcher.start()
        if approvals:
            approvals.start()
        try:
            yield
        finally:
            if approvals:
                approvals.stop()
            if dispatcher:
                dispatcher.stop()

    app = ReceiverApp(
        **_NO_TELEMETRY,
        title="k8s-runbooks alert receiver",
        description="Durable webhook receiver: alerts are spooled, routed and turned into Prefect deployment runs.",
        version="1",
        lifespan=lifespan,
    )
    app.state.spool, app.state.router, app.state.metrics, app.state.dispatcher = spool, router, metrics, dispatcher
    app.state.approvals = approvals
    commits = app.state.group_commit = GroupCommit(spool)

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

    async def ingest(source: Source, alerts: list[Alert]) -> dict[str, Any]:
        deciders = [_Decider(router, a) if a.status == "firing" else None for a in alerts]
        try:
            results = await commits.record(list(zip(alerts, deciders)), time.time())
        except sqlite3.Error as exc:
            log.error("cannot write the alert spool %s: %s", spool.path, exc)
            raise ApiError(503, "spool unavailable", "the alert could not be stored; retry later",
                           {"Retry-After": "5"}) from None
        out = []
        queued = False
        for alert, decider, (outcome, _row) in zip(alerts, deciders, results):
            decision = decider.decision if decider else None
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
                if outcome == "queued":  # the workload whose incident it opens or joins (the dispatcher decides which)
                    entry["incident"] = decision.incident or f"alert:{alert.dedup_key}"
            elif decider is not None and decision is None and (route := router.match(alert)) is not None:
                entry["route"] = route.name  # a repeat: stored without routing it again
            if decision is not None and decision.reason and outcome in ("ignored", "rejected"):
                entry["reason"] = decision.reason
            out.append(entry)
        if queued and dispatcher:
            dispatcher.wake()
        return {"accepted": len(alerts), "alerts": out}

    async def handle(scope: dict[str, Any], receive: Receive, source: Source) -> Reply:
        started = time.perf_counter()
        code = 500
        try:
            headers = _headers(scope)
            body = await _read_body(receive, headers, max_body_bytes)
            check_auth[source](headers, body)
            _check_json_content_type(headers)
            payload = _parse(MODELS[source], body)
            if source == "alertmanager" and payload.truncated_alerts:
                # The group key holds label values: untrusted text, possibly a secret.
                log.warning("Alertmanager truncated %d alerts of group %s (max_alerts)", payload.truncated_alerts,
                            redact(payload.group_key)[0])
            result = await ingest(source, payload.normalise())
            code = 200
            return _reply(200, result)
        except auth.AuthError as exc:
            code = 401
            return _error_reply(401, "unauthorized", exc.detail, {"WWW-Authenticate": exc.scheme})
        except ApiError as exc:
            code = exc.status
            return _error_reply(exc.status, exc.error, exc.detail, exc.headers)
        finally:
            metrics.requests.labels(source, str(code)).inc()
            metrics.ack_latency.labels(source).observe(time.perf_counter() - started)

    def check_sentry(headers: Headers, body: bytes) -> None:
        auth.check_sentry_signature(body, headers.get("sentry-hook-signature"), authc.sentry_secret)
        resource = headers.get("sentry-hook-resource", "event_alert")
        if resource != "event_alert":
            # Installation/issue webhooks share the integration's URL: verify, acknowledge, do nothing.
            raise ApiError(202, "ignored", f"Sentry-Hook-Resource {resource!r} is not handled; only event_alert")

    check_auth: dict[Source, Callable[[Headers, bytes], None]] = {
        "alertmanager": lambda h, _b: auth.check_bearer(h.get("authorization"), authc.token),
        "grafana": lambda h, _b: auth.check_bearer_or_basic(
            h.get("authorization"), authc.token, authc.grafana_basic_user, authc.grafana_basic_password),
        "sentry": check_sentry,
    }

    def webhook(source: Source) -> Callable[[dict[str, Any], Receive], Awaitable[Reply]]:
        async def run(scope: dict[str, Any], receive: Receive) -> Reply:
            return await handle(scope, receive, source)
        return run

    async def slack_interactions(scope: dict[str, Any], receive: Receive) -> Reply:
        """Slack button presses: verified here (401 for unsigned, forged, stale or replayed requests), decided by
        the approval desk's worker; Slack gets its 200 at once (it wants one within 3 s)."""
        code = 500
        try:
            headers = _headers(scope)
            body = await _read_body(receive, headers, max_body_bytes)
            if approvals is None:
                raise auth.AuthError("Slack approvals are not configured (K8S_RUNBOOKS_SLACK_SIGNING_SECRET)",
                                     scheme="Slack-Signature")
            press = approvals.accept(headers, body)
            code = 200
            return _reply(200, {"queued": press is not None})
        except auth.AuthError as exc:
            code = 401
            return _error_reply(401, "unauthorized", exc.detail, {"WWW-Authenticate": exc.scheme})
        except BadInteraction as exc:
            code = exc.status
            return _error_reply(exc.status, exc.error, exc.detail)
        except ApiError as exc:
            code = exc.status
            return _error_reply(exc.status, exc.error, exc.detail, exc.headers)
        finally:
            metrics.requests.labels("slack", str(code)).inc()

    app.webhook_handlers = {f"/v1/alerts/{source}": webhook(source) for source in MODELS}
    app.webhook_handlers["/v1/slack/interactions"] = slack_interactions

    async def routed(request: Request, source: Source) -> Response:
        status, body, headers = await handle(request.scope, request.receive, source)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.post("/v1/alerts/alertmanager", openapi_extra=_openapi_body(AlertmanagerPayload),
              summary="Alertmanager webhook (version 4)", response_model=None)
    async def alertmanager(request: Request) -> Response:
        return await routed(request, "alertmanager")

    @app.post("/v1/alerts/grafana", openapi_extra=_openapi_body(GrafanaPayload),
              summary="Grafana unified-alerting webhook contact point", response_model=None)
    async def grafana(request: Request) -> Response:
        return await routed(request, "grafana")

    @app.post("/v1/alerts/sentry", openapi_extra=_openapi_body(SentryIssueAlertPayload),
              summary="Sentry issue-alert webhook (Sentry-Hook-Resource: event_alert)", response_model=None)
    async def sentry(request: Request) -> Response:
        return await routed(request, "sentry")

    @app.post("/v1/slack/interactions", summary="Slack interactivity: approval button presses (signed by Slack)",
              response_model=None, openapi_extra={"requestBody": {"required": True, "content": {
                  "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["payload"],
                                                                   "properties": {"payload": {"type": "string"}}}}}}})
    async def slack(request: Request) -> Response:
        status, body, headers = await slack_interactions(request.scope, request.receive)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.get("/healthz", summary="Liveness, spool depth, dispatcher state")
    async def healthz() -> Response:
        body = {
            "status": "ok",
            "spool": {"path": str(spool.path), "pending": spool.pending_count(), "events_pending": spool.outbox_count(),
                      "incident_tables_pending": spool.unrecorded_count()},
            "dispatcher": None if dispatcher is None else {
                "alive": dispatcher.alive, "prefect_api_ok": dispatcher.api_ok, "last_error": dispatcher.last_error},
            "routes": {"file": router.source, "count": len(router.config.routes)},
            "auth": authc.describe(),
            "slack": None if approvals is None else {"pending_presses": approvals.pending(), "processed": approvals.processed},
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
