"""`k8s-runbooks`: the one entry point. Each command is registered by its entry in `COMMANDS`.

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


@app.callback()
def _root() -> None:
    # A group even when one command is registered: otherwise typer would run that command as the whole app
    # (`k8s-runbooks diagnose ...` would read `diagnose` as an argument).
    pass


def _not_installed(name: str) -> None:
    from k8s_runbooks_cli.annex import NO_SANDBOX

    def missing(ctx: typer.Context) -> None:
        raise RunbookError(NO_SANDBOX)

    # say why, instead of "No such command"
    app.command(name, help="Not installed here: " + NO_SANDBOX, context_settings={
        "allow_extra_args": True, "ignore_unknown_options": True})(missing)


def _sandbox() -> None:
    from k8s_runbooks_cli.annex import sandbox_installed

    if not sandbox_installed():
        return _not_installed("sandbox")
    from k8s_runbooks_cli.sandbox import sandbox_app

    app.add_typer(sandbox_app, name="sandbox")


def _run() -> None:
    from k8s_runbooks_cli.run import run_app

    app.add_typer(run_app, name="run")


def _alerts() -> None:
    from k8s_runbooks_cli.alerts import app as alerts_app

    app.add_typer(alerts_app, name="alerts")


def _drill() -> None:
    from k8s_runbooks_cli.drill import drill_app

    app.add_typer(drill_app, name="drill")


def _postmortem() -> None:
    from k8s_runbooks_cli.run import postmortem_cmd

    app.command("postmortem")(postmortem_cmd)


def _diagnose() -> None:
    from k8s_runbooks_cli.diagnose import diagnose_cmd

    app.command("diagnose")(diagnose_cmd)


def _snapshot() -> None:
    from k8s_runbooks_cli.diagnose import snapshot_cmd

    app.command("snapshot")(snapshot_cmd)


def _demo() -> None:
    from k8s_runbooks_cli.annex import sandbox_installed

    if not sandbox_installed():
        return _not_installed("demo")
    from k8s_runbooks_cli.sandbox import demo

    app.command("demo", help="The pod-crash story on the sandbox: crash → PodCrashLooping alert → receiver → runbook "
                             "run → post-mortem.")(demo)


# Every command, in the order `--help` lists them. Each sub-app is imported only when it is the command being run
# (`k8s-runbooks diagnose` does not import the sandbox supervisor); help, no command or an unknown one loads all.
COMMANDS = {"sandbox": _sandbox, "run": _run, "alerts": _alerts, "drill": _drill, "postmortem": _postmortem,
            "diagnose": _diagnose, "snapshot": _snapshot, "demo": _demo}


def _register(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    for name, add in COMMANDS.items():
        if command not in COMMANDS or name == command:
            add()


_register()

if __name__ == "__main__":
    app()
