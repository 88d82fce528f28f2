"""`k8s-runbooks`: the one entry point. Sub-apps register themselves in `_register()`.

Errors we raise on purpose (RunbookError and its subclasses, incl. sandbox errors) end as one clear line on
stderr and exit code 1 — never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from k8s_runbooks.errors import RunbookError

err_console = Console(stderr=True)


class App(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RunbookError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)


app = App(
    name="k8s-runbooks",
    help="Runbook automation for Kubernetes incidents, built on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _register() -> None:
    from k8s_runbooks_cli.annex import NO_SANDBOX, sandbox_installed
    from k8s_runbooks_cli.alerts import app as alerts_app
    from k8s_runbooks_cli.diagnose import diagnose_cmd, snapshot_cmd
    from k8s_runbooks_cli.drill import drill_app
    from k8s_runbooks_cli.run import postmortem_cmd, run_app

    app.add_typer(run_app, name="run")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(drill_app, name="drill")
    app.command("postmortem")(postmortem_cmd)
    app.command("diagnose")(diagnose_cmd)
    app.command("snapshot")(snapshot_cmd)
    if sandbox_installed():
        from k8s_runbooks_cli.sandbox import demo, sandbox_app

        app.add_typer(sandbox_app, name="sandbox")
        app.command("demo", help="The pod-crash story on the sandbox: crash → PodCrashLooping alert → receiver → runbook "
                                 "run → post-mortem.")(demo)
        return

    def missing(ctx: typer.Context) -> None:
        raise RunbookError(NO_SANDBOX)

    for name in ("sandbox", "demo"):  # say why, instead of "No such command"
        app.command(name, help="Not installed here: " + NO_SANDBOX, context_settings={
            "allow_extra_args": True, "ignore_unknown_options": True})(missing)


_register()

if __name__ == "__main__":
    app()
