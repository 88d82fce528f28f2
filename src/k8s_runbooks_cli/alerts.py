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
    from k8s_runbooks_prefect.alerts.server import serve

    serve(host=host, port=port, routes=routes, spool=spool)


@app.command("check-routes")
def check_routes(routes: Path = typer.Argument(..., help="Routing file to validate.")) -> None:
    """Validate a routing file and list its routes."""
    from k8s_runbooks.alerts.routing import load_routes

    router = load_routes(routes)
    for route in router.config.routes:
        typer.echo(f"{route.name}: {route.deployment} approval={route.approval} match={route.match} match_re={route.match_re}")


@app.command("check-policies")
def check_policies(policies: Path = typer.Argument(..., help="Approval policies file (K8S_RUNBOOKS_CHATOPS_CONFIG).")) -> None:
    """Validate an approval policies file (Slack approvers, two-person rule, escalation) and list its policies."""
    from k8s_runbooks.chatops.policy import load_policies
    from k8s_runbooks.errors import ConfigError

    if not policies.is_file():
        raise ConfigError(f"no approval policies file at {policies}")
    for p in load_policies(policies).policies:
        levels = " → ".join(f"{lv.notify}{':' + lv.routing_key if lv.notify == 'page' else ''}"
                            + (f" (+{lv.wait_seconds}s)" if lv.wait_seconds else "") for lv in p.escalation) or "none"
        typer.echo(f"{p.name}: routes={p.routes} namespaces={p.namespaces} channel={p.channel or '(default)'} "
                   f"approvers={len(p.approvers.users)} users, {len(p.approvers.groups)} groups "
                   f"two_person_min_pods={p.two_person_min_pods or 'off'} escalation: {levels}")
