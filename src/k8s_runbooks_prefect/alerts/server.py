"""Run the receiver: `python -m k8s_runbooks_prefect.alerts.server [--host H] [--port P] [--routes FILE] [--spool PATH]`.

Also `k8s-runbooks alerts serve`. Needs PREFECT_API_URL (a running Prefect server): without it the Prefect client
would start a throw-away in-process server and the runs would vanish with it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from k8s_runbooks.alerts.app import AuthConfig, create_app
from k8s_runbooks_prefect.alerts.dispatcher import Dispatcher
from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks.alerts.routing import load_routes
from k8s_runbooks.alerts.spool import Spool
from k8s_runbooks.chatops.desk import ApprovalDesk
from k8s_runbooks.chatops.policy import load_policies
from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.chatops.slack import SlackClient
from k8s_runbooks.errors import ConfigError, RunbookError
from k8s_runbooks.settings import Settings, get_settings

log = logging.getLogger("k8s_runbooks.alerts")


def _prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set; the alert receiver creates runs on a running Prefect server",
                          hint="e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api (printed by `k8s-runbooks sandbox env`)")
    return url


def build_approvals(chat: ChatOpsSettings, spool_path: Path, timeout: float) -> ApprovalDesk | None:
    """The Slack approval desk when a signing secret is set (policies validated now); None otherwise."""
    if chat.slack_signing_secret is None:
        return None
    from k8s_runbooks_prefect.chatops.prefect_runs import PrefectRunControl

    slack = None
    if chat.slack_bot_token is not None:
        slack = SlackClient(chat.slack_bot_token, chat.slack_api_url, chat.slack_timeout_seconds, attempts=2, budget_seconds=10)
    return ApprovalDesk(chat.slack_signing_secret, load_policies(chat.chatops_config), PrefectRunControl(timeout),
                        spool_path.parent / "slack-approvals.sqlite3", slack=slack)


def build_app(settings: Settings, routes: Path | None = None, spool_path: Path | None = None, *, dispatch: bool = True,
              chat: ChatOpsSettings | None = None):  # noqa: ANN201
    """The configured app (routes validated, spool opened) with its dispatcher and, when Slack is configured, its
    approval desk; raises ConfigError on bad config."""
    router = load_routes(routes or settings.receiver_routes)
    path = spool_path or settings.receiver_spool
    # With a dispatcher, its thread checkpoints the WAL; the request path then only commits.
    spool = Spool(path, settings.receiver_spool_synchronous, autocheckpoint=not dispatch)
    metrics = ReceiverMetrics()
    dispatcher = None
    if dispatch:
        _prefect_api_url()
        dispatcher = Dispatcher(
            path, metrics, synchronous=settings.receiver_spool_synchronous,
            request_timeout=settings.http_timeout_seconds,
            backoff_cap=settings.receiver_dispatch_backoff_max_seconds,
            missing_deployment_grace=settings.receiver_missing_deployment_grace_seconds,
        )
    auth_config = AuthConfig(
        token=settings.receiver_token, grafana_basic_user=settings.grafana_basic_user,
        grafana_basic_password=settings.grafana_basic_password, sentry_secret=settings.sentry_hook_secret,
    )
    approvals = build_approvals(chat or ChatOpsSettings(), path, settings.http_timeout_seconds) if dispatch else None
    return create_app(router, spool, auth_config=auth_config, max_body_bytes=settings.receiver_max_body_bytes,
                      metrics=metrics, dispatcher=dispatcher, approvals=approvals)


def _fast_io() -> tuple[str, str]:
    """uvloop and httptools (the C event loop and HTTP parser) when installed: about half the CPU per webhook
    of asyncio + h11 (see BENCHMARKS.md, alert storm)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if (loop, http) != ("uvloop", "httptools"):
        log.warning("uvloop/httptools not installed: serving with %s + %s (slower under alert storms)", loop, http)
    return loop, http


def serve(settings: Settings | None = None, *, host: str | None = None, port: int | None = None,
          routes: Path | None = None, spool: Path | None = None) -> None:
    import uvicorn

    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect call is noise here
    app = build_app(settings, routes, spool)
    host = host or settings.receiver_host
    port = port or settings.receiver_port
    pending = app.state.spool.pending_count()
    log.info("alert receiver on http://%s:%d: routes %s (%d), spool %s (%d pending, replayed by the dispatcher), Prefect %s",
             host, port, app.state.router.source, len(app.state.router.config.routes), app.state.spool.path, pending,
             _prefect_api_url())
    if app.state.approvals is None:
        log.info("Slack approvals off (K8S_RUNBOOKS_SLACK_SIGNING_SECRET unset): /v1/slack/interactions answers 401")
    else:
        log.info("Slack approvals on: policies %s", app.state.approvals.policies.source)
    if settings.receiver_token is None:
        log.warning("K8S_RUNBOOKS_RECEIVER_TOKEN is not set: Alertmanager and Grafana requests are not authenticated")
    loop, http = _fast_io()
    # One worker process: the spool has one writer, and group commit needs the requests in one process.
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, server_header=False, loop=loop, http=http, backlog=1024,
                            proxy_headers=False)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise ConfigError(f"the alert receiver could not listen on {host}:{port} (see the log above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s_runbooks_prefect.alerts.server", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--routes", type=Path)
    parser.add_argument("--spool", type=Path)
    args = parser.parse_args(argv)
    try:
        serve(host=args.host, port=args.port, routes=args.routes, spool=args.spool)
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
