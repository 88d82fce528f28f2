"""The `sandbox/pause` workload: the cheapest process that still writes a log line.

`COMMAND` is what the kubelet runs: a shell that prints one line and execs `sleep`, so each pod costs a
single ~1 MB process. `python -m k8s_runbooks.sandbox.workloads.pause` is the equivalent in Python.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time

_SLEEP = shutil.which("sleep") or "/bin/sleep"
_SH = shutil.which("sh") or "/bin/sh"

COMMAND: tuple[str, ...] = (
    _SH, "-c", f'echo "pause: sandbox pause container started (pid $$)"; exec {_SLEEP} infinity')


def main() -> None:
    print("pause: sandbox pause container started", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
