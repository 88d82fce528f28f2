"""`python -m k8s_runbooks_cli`: the `k8s-runbooks` command."""

from k8s_runbooks_cli.main import app

app()
