"""Imported once by the fork server: everything a runbook run needs, so forked runs start warm.

The fork server is single-threaded and must stay so (forking a threaded process is unsafe): this module
only imports (and ignores SIGTERM, see below). Only the fork server imports it. Which flow modules to import comes from `K8S_RUNBOOKS_WARM_PRELOAD` (comma-separated module
names, set by the warm starter before the fork server starts). A module that fails to import is reported on
stderr; its runs then import it themselves (slower, same result).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from k8s_runbooks_prefect.warm_runner import PRELOAD_ENV, REPO_ROOT_ENV

# Imported lazily by the engine during a run (found by diffing sys.modules after a forked run): without them
# here every run pays for them again (fastapi alone took seconds under load, via serialize_parameters).
ENGINE_LAZY_IMPORTS = (
    "prefect.engine", "prefect.flow_engine", "prefect.task_engine", "prefect.logging.handlers",
    "prefect._internal.observers", "prefect._internal.states", "prefect.utilities.visualization",
    "fastapi.encoders", "anyio._backends._asyncio", "anyio.streams.memory", "anyio.streams.stapled",
    "anyio.streams.tls", "opentelemetry.metrics", "opentelemetry._logs", "pydantic.color", "rich._emoji_codes",
)
# Imported lazily by the runbooks' first Kubernetes / Prometheus call (same diff, after a pod-crash run): the
# client's API classes build ~280 pydantic models at import (~0.5-0.8 s idle), which every run's
# `workload-status` paid. Imports only: no client is built here (a run's kubeconfig and context are its own).
CLIENT_LAZY_IMPORTS = (
    "kubernetes.client.api.core_v1_api", "kubernetes.client.api.apps_v1_api", "pydantic.validate_call_decorator",
    "prometheus_api_client.prometheus_connect", "netrc",
)


def _preload() -> None:
    # A group-wide SIGTERM (`sandbox down`, Ctrl-C in a terminal) is the runner's to handle: it cancels its runs
    # and exits, and the fork server follows when the runner's end of its pipe closes. A fork server killed
    # first would be restarted (cold) by the next run. Forked runs restore the default handler (child.run).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    root = os.environ.get(REPO_ROOT_ENV)
    if root and root not in sys.path:
        sys.path.insert(0, root)
    for name in (*ENGINE_LAZY_IMPORTS, *CLIENT_LAZY_IMPORTS, *filter(None, os.environ.get(PRELOAD_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken flow module must not stop the fork server
            print(f"warm runner: could not preload {name}: {exc!r}", file=sys.stderr, flush=True)


_preload()
