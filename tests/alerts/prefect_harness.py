"""A real Prefect server and the receiver as a real process against it (tests/alerts/conftest.py makes them
fixtures): runs stay Scheduled (no worker), what matters is which runs exist and what the receiver recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prefect import flow

from flows.params import PodCrashParams
from tests.alerts.conftest import REPO, payload
from tests.helpers.wait import wait_for

TOKEN = "integration-token"
SENTRY_SECRET = "integration-sentry-secret"


@flow(name="pod-crash")
def pod_crash_stub(params: PodCrashParams) -> None:
    """Same name and parameter model as the real runbook, so the server validates our parameters."""


@flow(name="high-latency")
def high_latency_stub(params: dict[str, Any]) -> None:
    """Stand-in for the high-latency runbook."""


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class PrefectServer:
    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
        env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api, DO_NOT_TRACK="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
        return env

    def start(self) -> None:
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # A fresh DB on a loaded 2-core machine: 65-130 s measured while several test suites ran.
        wait_for(lambda: httpx.get(f"{self.api}/health", timeout=2).status_code == 200, timeout=300, what="the Prefect server")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)

    def register(self) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api}):
            for fl, name in ((pod_crash_stub, "pod-crash"), (high_latency_stub, "high-latency")):
                fl.to_deployment(name=name).apply()

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        dep = httpx.get(f"{self.api}/deployments/name/{deployment}", timeout=10).json()
        resp = httpx.post(f"{self.api}/flow_runs/filter", timeout=10,
                          json={"deployments": {"id": {"any_": [dep["id"]]}}, "limit": 200})
        resp.raise_for_status()
        return resp.json()

    def run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=10).json()

    def state(self, run_id: str) -> str:
        return self.run(run_id)["state"]["type"]

    def set_state(self, run_id: str, type_: str, name: str, message: str = "") -> None:
        answer = httpx.post(f"{self.api}/flow_runs/{run_id}/set_state", timeout=10, json={
            "state": {"type": type_, "name": name, "message": message}, "force": True}).json()
        assert answer["status"] == "ACCEPT", answer

    def artifacts(self, run_id: str, key: str) -> list[dict[str, Any]]:
        resp = httpx.post(f"{self.api}/artifacts/filter", timeout=10, json={
            "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [key]}}})
        resp.raise_for_status()
        return resp.json()


@dataclass
class Receiver:
    url: str
    spool: Path
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(self.port),
                 "--routes", str(REPO / "deployments" / "alert-routes.yaml"), "--spool", str(self.spool)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
            )
        wait_for(lambda: self.proc.poll() is None and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200,
                 timeout=60, what="the receiver")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, sig)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=body, timeout=10, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}", **(headers or {})})

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=5).json()

    def drained(self) -> bool:
        """Nothing left to do: every alert dispatched or joined, every event emitted, every incident table written."""
        spool = self.health()["spool"]
        return spool["pending"] == 0 and spool["events_pending"] == 0 and spool["incident_tables_pending"] == 0

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def spool_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the spool file as another process would (after a crash: only the file remains)."""
        db = sqlite3.connect(f"file:{self.spool}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def crash_alert(fingerprint: str, namespace: str = "shop", deployment: str = "checkout", **labels: str) -> dict[str, Any]:
    """One PodCrashLooping alert (as in an Alertmanager notification) of one container of the deployment."""
    alert = payload("alertmanager_firing")["alerts"][0]
    alert["fingerprint"] = fingerprint
    alert["labels"].update(namespace=namespace, deployment=deployment, pod=f"{deployment}-abc-{fingerprint[:5]}", **labels)
    return alert


def latency_alert(fingerprint: str, namespace: str = "shop", service: str = "checkout") -> dict[str, Any]:
    alert = payload("alertmanager_firing")["alerts"][1]
    alert["fingerprint"] = fingerprint
    alert["labels"].update(namespace=namespace, service=service)
    return alert


def notification(*alerts: dict[str, Any], status: str = "firing") -> bytes:
    """An Alertmanager webhook notification holding these alerts (each with its own status)."""
    data = payload("alertmanager_firing")
    data["alerts"], data["status"] = list(alerts), status
    return json.dumps(data).encode()


def resolved(alert: dict[str, Any]) -> dict[str, Any]:
    return {**alert, "status": "resolved", "endsAt": "2026-11-25T10:30:00Z"}


def crash_notification(fingerprint: str, namespace: str = "shop", deployment: str = "checkout") -> bytes:
    return notification(crash_alert(fingerprint, namespace, deployment))


def by_key(runs: list[dict[str, Any]], fingerprint: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["idempotency_key"] and f"|{fingerprint}|" in r["idempotency_key"]]
