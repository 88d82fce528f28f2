"""The approval wait (flows.approval.wait_for_approval) against a real Prefect server behind a fault proxy.

A probe flow (`tests.flows.approval_wait_probe`) runs in its own process and reaches the API only through
`FaultProxy`; this test process talks to the server directly, plays the approver, and switches the proxy
to 503 "database is locked" answers or to connection refused while the probe waits. Nothing of ours is
patched: the probe calls `request_approval` as the runbooks do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from tests.conftest import REPO
from tests.helpers.fault_proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OUTAGE = "Prefect API unreachable while waiting for approval"
RECOVERED = re.compile(r"Prefect API answering again after [\d.]+ s \(failed requests: (\d+)\)")


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def server() -> Iterator[httpx.Client]:
    with prefect_test_harness(server_startup_timeout=240):
        with httpx.Client(base_url=PREFECT_API_URL.value(), timeout=10) as api:
            yield api


@pytest.fixture()
def proxy(server: httpx.Client) -> Iterator[FaultProxy]:
    upstream = urlsplit(str(server.base_url))
    with FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 80) as p:
        yield p


@dataclass
class Probe:
    proc: subprocess.Popen[bytes]
    out: Path
    api: httpx.Client

    @property
    def log(self) -> str:
        return (self.out / "stderr.log").read_text(errors="replace")

    def run_id(self) -> str:
        return wait_for(lambda: (self.out / "run_id").exists() and (self.out / "run_id").read_text(), 240,
                        f"the probe to start\n{self.log[-3000:]}")

    def state(self) -> str:
        r = self.api.get(f"/flow_runs/{self.run_id()}")
        r.raise_for_status()
        return str(r.json()["state"]["type"])

    def wait_paused(self) -> str:
        """Paused with its form saved (schema, then description): what the UI needs for the Resume dialog."""
        run_id = self.run_id()
        wait_for(lambda: self.state() == "PAUSED" and self.api.get(f"/flow_runs/{run_id}/input/paused-1-description").is_success,
                 240, f"the probe to pause\n{self.log[-3000:]}")
        return run_id

    def resume(self, run_input: dict[str, Any]) -> dict[str, Any]:
        for _ in range(10):  # the SQLite server answers 503 "database is locked" under load: raw callers retry
            r = self.api.post(f"/flow_runs/{self.run_id()}/resume", json={"run_input": run_input})
            if r.status_code != 503:
                break
            time.sleep(1)
        r.raise_for_status()
        return dict(r.json())

    def outcome(self, timeout: float = 240) -> dict[str, Any]:
        path = self.out / "outcome.json"
        return json.loads(wait_for(lambda: path.exists() and path.read_text(), timeout,
                                   f"the approval outcome\n{self.log[-3000:]}"))

    def finish(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the probe did not finish:\n{self.log[-4000:]}") from None


@pytest.fixture()
def start_probe(proxy: FaultProxy, server: httpx.Client, tmp_path: Path) -> Iterator[Any]:
    probes: list[Probe] = []

    def start(timeout_seconds: int, out: Path | None = None) -> Probe:
        out = out or tmp_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_API_URL": f"{proxy.url}/api", "PREFECT_HOME": str(out / "prefect-home"),
                    "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    # The client's own retries (~1 min) would hide these short outages from a wait that gives
                    # up on the first error (Prefect's pause_flow_run did): without them it fails at once.
                    "PREFECT_CLIENT_MAX_RETRIES": "0"})
        with open(out / "stderr.log", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tests.flows.approval_wait_probe", str(timeout_seconds),
                                     str(out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        probes.append(Probe(proc, out, server))
        return probes[-1]

    yield start
    proxy.restore()
    for p in probes:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(30)


def test_503_outage_then_the_rejection_sent_meanwhile_is_honoured(proxy: FaultProxy, start_probe: Any) -> None:
    probe = start_probe(600)
    run_id = probe.wait_paused()
    proxy.answer(503)
    wait_for(lambda: sum(n for req, n in proxy.answered.items() if run_id in req) >= 3, 120,
             "three failed requests of the wait", interval=0.5)
    # The server takes the answer while the run cannot see it; the run reads it once the API answers again.
    assert probe.resume({"approve": False, "action": "rollout_undo", "approver": "carol", "comment": "mid-outage"})["status"] == "ACCEPT"
    assert probe.proc.poll() is None, probe.log[-3000:]
    proxy.restore()

    assert probe.outcome() == {"approved": False, "action": None, "approver": "carol", "comment": "mid-outage",
                               "timed_out": False, "unanswered": False, "attestation": "", "void_reason": ""}
    assert probe.finish() == 0, probe.log[-3000:]
    log = probe.log
    assert log.count(OUTAGE) == 1 and len(RECOVERED.findall(log)) == 1, log[-4000:]  # one line each, not per poll
    assert int(RECOVERED.findall(log)[0]) >= 3


def test_refused_connections_then_an_approval_after_recovery_returns_the_chosen_action(
        proxy: FaultProxy, start_probe: Any) -> None:
    probe = start_probe(600)
    probe.wait_paused()
    proxy.refuse()
    wait_for(lambda: OUTAGE in probe.log, 120, "the wait to log the outage")
    assert probe.proc.poll() is None, probe.log[-3000:]
    proxy.restore()
    wait_for(lambda: RECOVERED.search(probe.log), 120, "the wait to log the recovery")
    assert probe.state() == "PAUSED"

    bad = probe.resume({"approve": True, "action": "delete_namespace", "approver": "mallory", "comment": ""})
    assert bad["status"] == "REJECT", bad  # the schema still narrows the action to the plan
    ok = probe.resume({"approve": True, "action": "rollout_restart", "approver": "alice", "comment": "after the outage"})
    assert ok["status"] == "ACCEPT", ok
    assert probe.outcome() == {"approved": True, "action": "rollout_restart", "approver": "alice",
                               "comment": "after the outage", "timed_out": False, "unanswered": False, "attestation": "", "void_reason": ""}
    assert probe.finish() == 0, probe.log[-3000:]


def test_outage_past_the_deadline_times_out_without_an_answer(proxy: FaultProxy, start_probe: Any) -> None:
    probe = start_probe(30)
    probe.wait_paused()
    proxy.refuse()
    # The wait returns at its deadline although the API is still down (it never waits past the pause timeout).
    assert probe.outcome() == {"approved": False, "action": None, "approver": "", "comment": "", "timed_out": True, "unanswered": False, "attestation": "", "void_reason": ""}
    assert OUTAGE in probe.log and not RECOVERED.search(probe.log), probe.log[-3000:]
    proxy.restore()
    probe.finish()


def test_a_deleted_run_is_not_an_outage_the_wait_fails_at_once(server: httpx.Client, start_probe: Any) -> None:
    probe = start_probe(600)
    run_id = probe.wait_paused()
    server.delete(f"/flow_runs/{run_id}").raise_for_status()
    assert probe.finish() != 0
    assert not (probe.out / "outcome.json").exists()
    assert OUTAGE not in probe.log and "404 Not Found" in probe.log, probe.log[-3000:]


def test_only_the_typed_resume_approves(server: httpx.Client, start_probe: Any, tmp_path: Path) -> None:
    """The server accepts a resume without the form's input (and a forced state change bypasses the form): the
    wait then finds no answer and reports the run unanswered, never approved."""
    for how in ("bare resume", "forced state"):
        out = tmp_path / how.replace(" ", "-")
        out.mkdir()
        probe = start_probe(600, out)
        run_id = probe.wait_paused()
        if how == "bare resume":
            r = probe.api.post(f"/flow_runs/{run_id}/resume", json={})
        else:
            r = probe.api.post(f"/flow_runs/{run_id}/set_state",
                               json={"state": {"type": "RUNNING", "name": "Running"}, "force": True})
        assert r.is_success and r.json()["status"] == "ACCEPT", r.text
        assert probe.outcome() == {"approved": False, "action": None, "approver": "", "comment": "",
                                   "timed_out": False, "unanswered": True, "attestation": "", "void_reason": ""}, how
        assert probe.finish() == 0, probe.log[-3000:]
        assert "Resumed without an answer to the approval form" in probe.log, probe.log[-3000:]
