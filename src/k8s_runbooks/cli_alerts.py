"""`k8s-runbooks alerts ...`: the alert receiver."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Alert receiver: Alertmanager/Grafana/Sentry webhooks start runbook deployments.", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    host: str = typer.Option(None, help="Bind address [default: K8S_RUNBOOKS_RECEIVER_HOST or 127.0.0.1]."),
    port: int = typer.Option(None, help="Port [default: K8S_RUNBOOKS_RECEIVER_PORT or 8080]."),
    routes: Path = typer.Option(None, help="Routing file [default: K8S_RUNBOOKS_RECEIVER_ROUTES]."),
    spool: Path = typer.Option(None, help="SQLite spool file [default: K8S_RUNBOOKS_RECEIVER_SPOOL]."),
) -> None:
    """Run the receiver until interrupted (needs PREFECT_API_URL)."""
    from k8s_runbooks.alerts.server import serve

    serve(host=host, port=port, routes=routes, spool=spool)


@app.command("check-routes")
def check_routes(routes: Path = typer.Argument(..., help="Routing file to validate.")) -> None:
    """Validate a routing file and list its routes."""
    from k8s_runbooks.alerts.routing import load_routes

    router = load_routes(routes)
    for route in router.config.routes:
        typer.echo(f"{route.name}: {route.deployment} approval={route.approval} match={route.match} match_re={route.match_re}")
