"""`k8s-runbooks`, the command line: the composition root.

The one package that may import everything: the core (`k8s_runbooks`), the Prefect adapters
(`k8s_runbooks_prefect`), `flows/` (loaded lazily, inside the commands that run them) and the sandbox. Nothing
imports it back. `main.app` is the console script; `python -m k8s_runbooks_cli` runs the same app.
"""
