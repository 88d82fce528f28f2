"""`make demo`'s command, `k8s-runbooks demo --scenario crash`, end to end on a sandbox of its own (free ports)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, PORT_SETTINGS, free_ports, random_pod_subnet, sandbox_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_the_crash_demo_tells_the_story_to_a_post_mortem(tmp_path: Path) -> None:
    """Fault → pods crash → PodCrashLooping in Alertmanager → the receiver's run rolls back → post-mortem. The alert
    path may beat the back-off (the alert fires on the first restarts): the demo must move on either way."""
    env = sandbox_env(tmp_path, dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)))), random_pod_subnet())
    env.pop("K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES")  # the shipped routes, as `make demo` has them
    try:
        out = subprocess.run([*CLI, "demo", "--scenario", "crash", "--state-dir", str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        text = out.stdout
        for step in ("1. sandbox up", "2. inject a crash fault", "3. kubectl get pods", "4. the PodCrashLooping alert",
                     "5. Alertmanager → alert receiver"):
            assert step in text, text[-3000:]
        assert "Completed resolved: roll back shop/deployment/checkout" in text, text[-3000:]
        report = re.search(r"post-mortem: (\S+\.md)", text)
        assert report and "Timeline" in Path(report[1]).read_text()
        assert "Traceback" not in out.stderr
    finally:
        subprocess.run([*CLI, "sandbox", "down", "--state-dir", str(tmp_path)], capture_output=True, env=env, timeout=120)
