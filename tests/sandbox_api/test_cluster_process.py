"""The cluster entry point: clear failure when the port is taken, clean exit on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_port_in_use_is_one_clear_line_and_exit_2(cluster, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(tmp_path),
                           "--port", str(cluster.port), "--no-runtime"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cluster.port) in lines[0] and "K8S_RUNBOOKS_SANDBOX_API_PORT" in lines[0]


def test_sigterm_stops_cleanly_and_removes_pid_file(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "k8s_runbooks.sandbox.cluster", "--state-dir", str(tmp_path),
                             "--port", str(port), "--no-runtime"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert (tmp_path / "pids" / "cluster.pid").read_text().strip() == str(proc.pid)
        assert f"http://127.0.0.1:{port}" in (tmp_path / "kubeconfig").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "pids" / "cluster.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
