"""Group commit: concurrent notifications share transactions, each is acknowledged only once durable, and one
bad notification fails alone. The process test kills the receiver right after the acks (no dispatch possible):
every acknowledged alert must be in the spool file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from k8s_runbooks.alerts.app import create_app
from k8s_runbooks.alerts.payloads import AlertmanagerPayload
from k8s_runbooks.alerts.routing import Router
from k8s_runbooks.alerts.spool import Spool
from tests.alerts.conftest import REPO, ROUTES, payload, payload_bytes
from tests.conftest import free_ports

AM = "/v1/alerts/alertmanager"


def _notification(i: int) -> bytes:
    data = payload("alertmanager_firing")
    alert = data["alerts"][0]
    alert["fingerprint"] = f"group{i:011d}"
    alert["labels"]["deployment"] = f"svc-{i}"
    data["alerts"] = [alert]
    return json.dumps(data).encode()


def _rows_on_disk(path: Path) -> dict[str, str]:
    """What a fresh connection (another process, after a crash) sees in the spool file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT fingerprint, state FROM alerts").fetchall())
    finally:
        db.close()


def test_concurrent_notifications_share_transactions_and_are_all_durable(router: Router, spool: Spool) -> None:
    app = create_app(router, spool)
    n = 60

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver", timeout=30) as client:
            return await asyncio.gather(*(client.post(AM, content=_notification(i), headers={"Content-Type": "application/json"})
                                          for i in range(n)))

    responses = asyncio.run(storm())
    assert [r.status_code for r in responses] == [200] * n
    assert {r.json()["alerts"][0]["outcome"] for r in responses} == {"queued"}
    commits = app.state.group_commit
    assert commits.requests == n and commits.groups < n, (commits.groups, n)  # several requests per transaction
    on_disk = _rows_on_disk(spool.path)
    assert len(on_disk) == n and set(on_disk.values()) == {"pending"}


def test_one_bad_notification_fails_alone_in_its_group(spool: Spool, router: Router) -> None:
    alerts = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()
    good = [(alerts[0], router.decide(alerts[0]))]
    bad = [(alerts[1], router.decide(alerts[1])),
           (dataclasses.replace(alerts[2], labels={"alertname": object()}), None)]  # not JSON-serialisable
    later = [(alerts[2], router.decide(alerts[2]))]
    first, failed, third = spool.record_many([(good, 1.0), (bad, 1.0), (later, 1.0)])
    assert isinstance(failed, TypeError)
    assert [o for o, _ in first] == ["queued"] and [o for o, _ in third] == ["ignored"]
    stored = {r.alertname for r in spool.rows()}
    assert stored == {"PodCrashLooping", "Watchdog"}  # nothing of the failed notification, not even its first alert
    assert spool.outbox_count() == 2


def test_repeats_are_not_routed_again(spool: Spool, router: Router) -> None:
    alert = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()[0]
    calls: list[int] = []

    def decide():  # noqa: ANN202
        calls.append(1)
        return router.decide(alert)

    assert [o for o, _ in spool.record([(alert, decide)], 1.0)] == ["queued"]
    assert [o for o, _ in spool.record([(alert, decide)], 2.0)] == ["duplicate"]
    assert len(calls) == 1 and spool.get(alert.dedup_key).repeats == 1


@pytest.mark.slow
def test_sigkill_right_after_the_acks_loses_no_acknowledged_alert(tmp_path: Path) -> None:
    """A crash between accept and dispatch: the Prefect API is unreachable, so every alert is still pending
    when the receiver is killed; all acknowledged ones must be in the spool file."""
    port, dead_port = free_ports(2)
    spool_path = tmp_path / "spool.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
    env.update(PREFECT_API_URL=f"http://127.0.0.1:{dead_port}/api", PREFECT_HOME=str(tmp_path / "prefect"),
               DO_NOT_TRACK="1")
    with open(tmp_path / "receiver.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(port), "--routes", str(ROUTES),
             "--spool", str(spool_path)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "receiver.log").read_text()[-2000:]
            time.sleep(0.2)

        async def storm() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                return await asyncio.gather(*(client.post(AM, content=_notification(i), headers={"Content-Type": "application/json"})
                                              for i in range(80)))

        responses = asyncio.run(storm())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    acked = {r.json()["alerts"][0]["fingerprint"] for r in responses if r.status_code == 200}
    assert len(acked) == 80
    on_disk = _rows_on_disk(spool_path)
    assert acked <= set(on_disk) and {on_disk[fp] for fp in acked} == {"pending"}
