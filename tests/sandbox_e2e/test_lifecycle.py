"""`sandbox up` twice is harmless, `status` tells the truth, `down` leaves no process behind.

Runs its own small sandbox (no Prefect, no demo workload) so it can take it down without disturbing the
session sandbox other tests use.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from k8s_runbooks.sandbox.launchers import OWNER_ENV
from tests.conftest import REAL_KUBECONFIG, Sandbox, start_sandbox, stop_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(REAL_KUBECONFIG), reason="sandbox-only")]
COMPONENTS = ("cluster", "alertmanager", "pushgateway", "prometheus")


def our_processes(state_dir: Path) -> list[psutil.Process]:
    """Every process started for `state_dir`: its path on the command line or our owner marker in the env."""
    state = str(state_dir.resolve())
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if state in " ".join(proc.info["cmdline"] or []) or proc.environ().get(OWNER_ENV) == state:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pids(box: Sandbox) -> dict[str, int]:
    assert box.state_dir is not None
    return {name: int((box.state_dir / "pids" / f"{name}.pid").read_text()) for name in COMPONENTS}


def status_lines(box: Sandbox) -> dict[str, str]:
    out = box.cli("sandbox", "status").stdout
    return {name: next(line for line in out.splitlines() if f" {name} " in line) for name in COMPONENTS}


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    box = start_sandbox(tmp_path, "--no-prefect", "--no-demo")
    try:
        first = pids(box)
        for name, line in status_lines(box).items():
            assert " up " in line and str(first[name]) in line, line
        again = box.cli("sandbox", "up", "--no-prefect", "--no-demo")
        assert pids(box) == first, "a healthy component must be left alone"
        assert again.stdout.count("running") >= len(COMPONENTS)
        assert our_processes(tmp_path), "the sandbox should be running before down"
    finally:
        stop_sandbox(box)
    leftovers = our_processes(tmp_path)
    assert leftovers == [], [p.cmdline() for p in leftovers]
    assert not list((tmp_path / "pids").rglob("*.pid"))
    for name, line in status_lines(box).items():
        assert " down " in line, line


def test_dead_component_with_stale_pid_file_is_restarted(tmp_path: Path) -> None:
    box = start_sandbox(tmp_path, "--no-prefect", "--no-demo")
    try:
        before = pids(box)
        victim = psutil.Process(before["pushgateway"])
        victim.kill()
        victim.wait(10)
        assert " down " in status_lines(box)["pushgateway"]
        box.cli("sandbox", "up", "--no-prefect", "--no-demo")
        after = pids(box)
        assert after["pushgateway"] != before["pushgateway"]
        assert {k: v for k, v in after.items() if k != "pushgateway"} == {
            k: v for k, v in before.items() if k != "pushgateway"}
        assert " up " in status_lines(box)["pushgateway"]
    finally:
        stop_sandbox(box)
    assert our_processes(tmp_path) == []


def test_down_never_kills_a_process_that_reuses_a_stale_pid(tmp_path: Path) -> None:
    """A pid file pointing at someone else's process (PID reuse) must not get it killed."""
    import subprocess

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "pids" / "pods").mkdir(parents=True)
        (tmp_path / "pids" / "prometheus.pid").write_text(f"{stranger.pid}\n")
        (tmp_path / "pids" / "pods" / "shop_x.pid").write_text(f"{stranger.pid}\n")
        Sandbox(kubeconfig=tmp_path / "kubeconfig", api_url="", prometheus_url="", alertmanager_url="",
                pushgateway_url="", prefect_api_url=None, state_dir=tmp_path,
                env=start_env(tmp_path)).cli("sandbox", "down")
        assert stranger.poll() is None, "down killed a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()


def start_env(state_dir: Path) -> dict[str, str]:
    from tests.conftest import PORT_SETTINGS, free_ports, random_pod_subnet, sandbox_env

    return sandbox_env(state_dir, dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)))), random_pod_subnet())


def test_down_stops_pod_processes_left_by_a_killed_cluster(tmp_path: Path) -> None:
    box = start_sandbox(tmp_path, "--no-prefect")
    try:
        pod_pids = [int(p.read_text()) for p in (tmp_path / "pids" / "pods").glob("*.pid")]
        assert len(pod_pids) >= 5, "the demo workload runs 5 pods"
        cluster = psutil.Process(pids(box)["cluster"])
        cluster.kill()  # no chance to stop its pods
        cluster.wait(10)
        assert any(psutil.pid_exists(pid) for pid in pod_pids)
    finally:
        stop_sandbox(box)
    alive = [pid for pid in pod_pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert our_processes(tmp_path) == []
