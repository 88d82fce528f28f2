"""A component that dies while starting says how: its exit code or the signal that killed it, and its log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from k8s_runbooks.sandbox import launchers
from k8s_runbooks.sandbox.binaries import SandboxError


def component(code: str) -> launchers.Component:
    return launchers.Component(
        name="doomed", port=1, port_setting="K8S_RUNBOOKS_SANDBOX_DOOMED_PORT",
        url="http://127.0.0.1:1", health_url="http://127.0.0.1:1/healthz",
        command=[sys.executable, "-c", code, "doomed-marker"], marker="doomed-marker", timeout_s=30,
    )


@pytest.mark.parametrize(("code", "says"), [
    ("import sys; print('bad config: no such file', flush=True); sys.exit(3)", "doomed exited with code 3 during start-up"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "doomed was killed by SIGKILL during start-up"),
])
def test_death_during_start_up_names_the_exit(tmp_path: Path, code: str, says: str) -> None:
    comp = component(code)
    pid = launchers.start(tmp_path, comp)
    with pytest.raises(SandboxError) as err:
        launchers.wait_healthy(tmp_path, comp, pid)
    assert isinstance(err.value, launchers.ComponentExited) and err.value.returncode == (3 if "code 3" in says else -9)
    message = str(err.value)
    assert says in message, message
    assert "starting:" in message  # the log excerpt follows
    if "code 3" in says:
        assert "bad config: no such file" in message
