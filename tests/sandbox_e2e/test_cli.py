"""CLI behaviour that needs no running sandbox: clear one-line errors, env and status output."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.conftest import CLI, PORT_SETTINGS, free_ports, random_pod_subnet, sandbox_env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def env_for(tmp_path: Path) -> dict[str, str]:
    ports = dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS))))
    return sandbox_env(tmp_path, ports, random_pod_subnet())


def test_port_taken_is_one_clear_line_naming_the_setting(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env["K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT"] = str(port)
        result = run(env, "sandbox", "up", "--no-prefect", "--no-demo", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0] and "K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not list((tmp_path / "pids").glob("*.pid")), "nothing may be started when a port is taken"


def test_env_prints_exports_for_the_configured_ports(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    result = run(env, "sandbox", "env", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert exports == {
        "KUBECONFIG": str(tmp_path.resolve() / "kubeconfig"),
        "PREFECT_API_URL": f"http://127.0.0.1:{env['K8S_RUNBOOKS_SANDBOX_PREFECT_PORT']}/api",
        "K8S_RUNBOOKS_PROMETHEUS_URL": f"http://127.0.0.1:{env['K8S_RUNBOOKS_SANDBOX_PROMETHEUS_PORT']}",
        "K8S_RUNBOOKS_ALERTMANAGER_URL": f"http://127.0.0.1:{env['K8S_RUNBOOKS_SANDBOX_ALERTMANAGER_PORT']}",
        "K8S_RUNBOOKS_PUSHGATEWAY_URL": f"http://127.0.0.1:{env['K8S_RUNBOOKS_SANDBOX_PUSHGATEWAY_PORT']}",
        "K8S_RUNBOOKS_RECEIVER_URL": f"http://127.0.0.1:{env['K8S_RUNBOOKS_SANDBOX_RECEIVER_PORT']}",
    }


def test_status_of_a_sandbox_that_never_ran_is_all_down(tmp_path: Path) -> None:
    result = run(env_for(tmp_path), "sandbox", "status", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("cluster", "prometheus", "alertmanager", "pushgateway", "prefect"):
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert " down " in line


def test_fault_without_a_sandbox_and_unknown_kind_are_clear_errors(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    no_sandbox = run(env, "sandbox", "fault", "crash", "--state-dir", str(tmp_path))
    assert no_sandbox.returncode == 1 and "sandbox up" in no_sandbox.stderr
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    unknown = run(env, "sandbox", "fault", "meltdown", "--state-dir", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown fault 'meltdown'" in unknown.stderr and "Traceback" not in unknown.stderr
