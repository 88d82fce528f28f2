"""Drill schedules fire: `k8s-runbooks drill schedule` turns the drill deployment's schedule on with a target, the
Prefect scheduler creates the run (auto-scheduled, not created by us), the sandbox's runner runs it to the end;
`--off` stops it. prefect.yaml / deploy.SPECS stay the one definition of the drill deployments."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from k8s_runbooks.sandbox.demo_workload import ensure_workload, wait_ready
from tests.conftest import REPO, Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]
NS = "drill-sched"
CLI = [sys.executable, "-m", "k8s_runbooks_cli"]


def _cli(box: Sandbox, *args: str) -> str:
    out = subprocess.run([*CLI, "drill", "schedule", "pod-crash", *args], capture_output=True, text=True, env=box.env,
                         timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    return out.stdout


def _runs(api: httpx.Client, deployment_id: str, *states: str) -> list[dict[str, Any]]:
    """Runs of the deployment in `states` (the scheduler keeps up to 100 future runs of an every-minute cron)."""
    resp = api.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}},
                                               "flow_runs": {"state": {"type": {"any_": list(states)}}},
                                               "sort": "EXPECTED_START_TIME_ASC", "limit": 50})
    resp.raise_for_status()
    return resp.json()


def test_only_prefect_yaml_defines_the_drill_deployments() -> None:
    assert not (REPO / "deployments" / "drills.yaml").exists()


def test_a_scheduled_drill_is_created_by_the_scheduler_and_completes(sandbox_only: Sandbox) -> None:
    box = sandbox_only
    assert box.prefect_api_url
    ensure_workload(box.kubeconfig, NS, {"web": 1})
    wait_ready(box.kubeconfig, NS, ["web"], timeout_s=120)
    api = httpx.Client(base_url=box.prefect_api_url, timeout=10)
    dep = api.get("/deployments/name/drill-pod-crash/drill-pod-crash").json()
    try:
        shown = _cli(box, "--on", "--cron", "* * * * *", "-n", NS, "-d", "web", "--dry-run")
        assert f"* * * * * (UTC) ON, target {NS}/web (dry run)" in shown, shown
        deadline, seen = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            ours = [r for r in _runs(api, dep["id"], "COMPLETED", "FAILED", "CRASHED") if r["auto_scheduled"]
                    and (r["parameters"].get("params") or {}).get("namespace") == NS]
            done = [r for r in ours if r["state"]["type"] == "COMPLETED"]
            if done:
                seen = done[0]
                break
            failed = [r for r in ours if r["state"]["type"] in ("FAILED", "CRASHED")]
            assert not failed, failed[0]["state"]
            time.sleep(2)
        assert seen is not None, ("no scheduled drill run completed within 4 minutes", api.get(
            f"/deployments/{dep['id']}/schedules").json(), [(r["name"], r["auto_scheduled"], r["state"]["type"],
                                                             r["expected_start_time"], r["parameters"]) for r in _runs(api, dep["id"], "SCHEDULED", "PENDING", "RUNNING")][:4])
        assert seen["parameters"]["params"]["dry_run"] is True
        [schedule] = api.get(f"/deployments/{dep['id']}/schedules").json()
        assert seen["created_by"]["type"] == "SCHEDULE" and seen["created_by"]["id"] == schedule["id"]  # the scheduler
    finally:
        shown = _cli(box, "--off", "--cron", "0 3 * * 1")
        assert "0 3 * * 1 (UTC) off" in shown, shown
    # Off means off: the runs the scheduler had queued for the every-minute cron are gone.
    left = [r for r in _runs(api, dep["id"], "SCHEDULED") if (r["parameters"].get("params") or {}).get("namespace") == NS]
    assert left == [], [(r["name"], r["expected_start_time"]) for r in left]
