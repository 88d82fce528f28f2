"""Private processes for the fault tests that kill things: a Prefect server (the sandbox's wrapper, SQLite),
an alert receiver and a runbook Runner, on free ports in a temporary directory, all talking to the
session sandbox's cluster and Prometheus. The session's own Prefect/receiver/runner are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from k8s_runbooks.sandbox import launchers
from k8s_runbooks.sandbox.launchers import SandboxPorts
from k8s_runbooks_prefect.warm_runner.starter import read_run_pid
from tests.conftest import REPO, Sandbox, free_ports
from tests.reliability._faults_helpers import stop_group, wait_for

TOKEN = "faults-receiver-token"


class PrefectServer:
    """`python -m k8s_runbooks.sandbox.prefect_server` with its pid file in `state_dir` (stop/start keep the DB);
    `env` adds server settings (e.g. PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS)."""

    def __init__(self, state_dir: Path, **env: str) -> None:
        self.state_dir = state_dir
        port = free_ports(1)[0]
        self.comp = launchers.prefect_component(state_dir, SandboxPorts(api=0, prometheus=0, alertmanager=0,
                                                                        pushgateway=0, prefect=port, receiver=0))
        self.comp.env.update(env)
        self.comp.timeout_s = 480  # a fresh SQLite DB under heavy load (several test runs on 2 cores) took > 240 s
        self.api = f"http://127.0.0.1:{port}/api"
        self.pid: int | None = None

    def start(self) -> None:
        for attempt in (1, 2):
            self.pid = launchers.start(self.state_dir, self.comp)
            try:
                launchers.wait_healthy(self.state_dir, self.comp, self.pid)
                return
            except launchers.ComponentExited as exc:
                self.stop()  # never leave a half-started server behind
                # Killed by a signal while importing, with an empty log (once in CI): nothing here sends one, and
                # with PIDs wrapping every few minutes under the suite, a stray kill of a reused PID is the likely
                # sender. A second start tells that apart from a server that cannot start (that one fails twice).
                if attempt == 2 or exc.returncode is None or exc.returncode >= 0:
                    raise
                warnings.warn(f"retrying the Prefect start once: {exc}", stacklevel=1)
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        if self.pid is not None:
            launchers.stop_pid(self.pid)
            self.pid = None

    def get(self, path: str) -> Any:
        resp = httpx.get(f"{self.api}{path}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        for _ in range(5):  # SQLite "database is locked" is a 503: raw HTTP callers retry
            resp = httpx.post(f"{self.api}{path}", json=body, timeout=10)
            if resp.status_code != 503:
                break
        resp.raise_for_status()
        return resp.json()

    def delete_waiting_runs(self) -> int:
        """Delete every Scheduled/Pending run: alerts earlier tests dispatched with no runner serving."""
        waiting = self.post("/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING"]}}},
                                                  "limit": 200})
        for run in waiting:
            httpx.delete(f"{self.api}/flow_runs/{run['id']}", timeout=10).raise_for_status()
        return len(waiting)

    def runs_of(self, deployment: str) -> list[dict[str, Any]]:
        dep = self.get(f"/deployments/name/{deployment}")
        return self.post("/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}, "limit": 200})

    def state(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/flow_runs/{run_id}")["state"]


def client_env(box: Sandbox, prefect: PrefectServer, state_dir: Path, **extra: str) -> dict[str, str]:
    """The session sandbox's cluster and Prometheus, our Prefect server, a private guard state dir."""
    env = {**box.env, "PREFECT_API_URL": prefect.api, "PREFECT_HOME": str(state_dir / "prefect-client"),
           "K8S_RUNBOOKS_STATE_DIR": str(state_dir / "guard"), "K8S_RUNBOOKS_REPORTS_DIR": str(state_dir / "reports"),
           "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.update(extra)
    return env


@dataclass
class Receiver:
    env: dict[str, str]
    routes: Path
    spool: Path
    log: Path
    port: int = field(default_factory=lambda: free_ports(1)[0])
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(self.port), "--routes", str(self.routes),
                 "--spool", str(self.spool)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            wait_for(lambda: self.proc is not None and self.proc.poll() is None
                     and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, 120, "the receiver", interval=0.2)
        except BaseException:
            self.kill()
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            stop_group(self.proc, sig)

    def post(self, body: dict[str, Any], timeout: float = 5) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/alerts/alertmanager", json=body, timeout=timeout,
                          headers={"Authorization": f"Bearer {TOKEN}"})

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=5).json()

    def drained(self) -> bool:
        h = self.health()
        return h["spool"]["pending"] == 0 and h["spool"]["events_pending"] == 0


def crash_alert(fingerprint: str, namespace: str = "storm", deployment: str = "app") -> dict[str, Any]:
    return {
        "version": "4", "groupKey": "{}:{alertname=\"PodCrashLooping\"}", "status": "firing", "receiver": "k8s-runbooks",
        "groupLabels": {"alertname": "PodCrashLooping"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "fingerprint": fingerprint, "startsAt": "2026-11-25T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
                    "labels": {"alertname": "PodCrashLooping", "namespace": namespace, "deployment": deployment,
                               "pod": f"{deployment}-abc-{fingerprint[:5]}", "severity": "critical"},
                    "annotations": {"summary": "crash looping"}}],
    }


def write_routes(path: Path, deployment: str) -> Path:
    path.write_text(json.dumps({"version": 1, "routes": [{
        "name": "pod-crash", "sources": ["alertmanager"], "match": {"alertname": "PodCrashLooping"},
        "deployment": deployment, "approval": "required",
        "parameters": {"params": {"namespace": "{labels.namespace}", "deployment": "{labels.deployment}",
                                  "approval": "{approval}"}}}]}))
    return path


class RunnerProc:
    """`python -m k8s_runbooks_prefect.deploy serve` against our Prefect server (registers and runs the runbooks); the
    (warm) runner names each run's process in its log and in `run_pid_dir/<flow run id>.pid`."""

    def __init__(self, env: dict[str, str], state_dir: Path) -> None:
        self.env, self.ready = env, state_dir / "runner.ready"
        self.log = state_dir / "runner.log"
        self.run_pid_dir = state_dir / "runs"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "k8s_runbooks_prefect.deploy", "serve", "--query-seconds", "1", "--ready-file", str(self.ready),
                 "--run-pid-dir", str(self.run_pid_dir)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            wait_for(lambda: self.ready.exists() or (self.proc.poll() is not None and "exited"), 300, "the runner's deployments")
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
        except BaseException:
            self.stop()
            raise

    def run_pid(self, flow_run_id: str) -> int | None:
        """The PID the runner keeps for `flow_run_id` while its process lives (None before it starts and after)."""
        return read_run_pid(self.run_pid_dir, flow_run_id)

    def logged(self, line: str) -> bool:
        return line in self.log.read_text(errors="replace")

    def descendants(self) -> set[int]:
        return {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)} if self.proc else set()

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM)
            if self.proc.poll() is None:
                stop_group(self.proc, signal.SIGKILL)


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
