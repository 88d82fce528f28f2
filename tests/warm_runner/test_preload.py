"""What the fork server imports (`warm_runner.preload`): the engine's and the clients' lazy imports, and no thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from k8s_runbooks_prefect.warm_runner import PRELOAD_ENV, REPO_ROOT_ENV
from k8s_runbooks_prefect.warm_runner.preload import CLIENT_LAZY_IMPORTS, ENGINE_LAZY_IMPORTS
from tests.conftest import REPO

PROBE = """
import json, sys, threading
import k8s_runbooks_prefect.warm_runner.preload
print(json.dumps({"modules": sorted(sys.modules), "threads": [t.name for t in threading.enumerate()]}))
"""


def test_preload_imports_the_clients_and_the_flows_and_starts_no_thread() -> None:
    env = {**os.environ, PRELOAD_ENV: "flows.pod_crash", REPO_ROOT_ENV: str(REPO), "DO_NOT_TRACK": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "could not preload" not in out.stderr, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert {*ENGINE_LAZY_IMPORTS, *CLIENT_LAZY_IMPORTS, "flows.pod_crash"} <= set(seen["modules"])
    # Forking a threaded process is unsafe: the fork server must stay single-threaded after its imports.
    assert seen["threads"] == ["MainThread"], seen["threads"]
