"""The incident-response flow routes an incident to the right runbook (as a subflow) and writes one
post-mortem, with charts, for the whole incident. Runs against the session sandbox on shop/checkout:
a latency incident found by looking first, then a crash incident named by its alert."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k8s_runbooks.sandbox.demo_workload import set_fault, wait_ready
from tests.conftest import Sandbox
from tests.flows.test_high_latency_flow import NS, WINDOW, LatencyEnv

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FLOW = "incident-response"


@pytest.fixture(scope="module")
def env(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LatencyEnv]:
    if not sandbox.is_sandbox:
        pytest.skip("injects faults: sandbox only")
    e = LatencyEnv(sandbox, tmp_path_factory.mktemp("incident-flow"))
    set_fault(sandbox.kubeconfig, NS, "checkout", "clear")
    wait_ready(sandbox.kubeconfig, NS, ["checkout", "payments"], timeout_s=120)
    yield e
    set_fault(sandbox.kubeconfig, NS, "checkout", "clear")


def _incident(**params: Any) -> dict[str, Any]:
    return {"namespace": NS, "service": "checkout", "approval": "auto", "drill": True, "rate_window": WINDOW,
            "crash_window": "30s", "chart_lookback_minutes": 2, **params}


def _subflows(env: LatencyEnv, run_id: str) -> list[str]:
    runs = env.api.post("/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}).json()
    flows = {f["id"]: f["name"] for f in env.api.post("/flows/filter", json={}).json()}
    return sorted(flows[r["flow_id"]] for r in runs)


def _one_postmortem_with_charts(pm_path: Path) -> str:
    pm = pm_path.read_text()
    assert pm.count("# Post-mortem:") == 1 and "## Charts" in pm
    assert {p.name for p in (pm_path.parent / "charts").glob("*.png")} == {"latency.png", "error-rate.png", "restarts.png", "cpu-throttling.png"}
    assert pm_path.with_suffix(".html").read_text().count('src="data:image/png;base64,') == 4
    return pm


def test_latency_found_by_looking_is_routed_to_high_latency_with_one_postmortem(env: LatencyEnv) -> None:
    env.inject_latency()
    result = env.run_flow("incident", **_incident(runbook_overrides={
        "stable_seconds": 5, "recovery_timeout_seconds": 150, "monitor_stable_seconds": 10, "monitor_timeout_seconds": 150}))
    run_id = result["flow_run_id"]
    assert result["state"] == "COMPLETED", result
    assert "high-latency" in _subflows(env, run_id)
    rec = env.record_of(run_id, FLOW)
    assert any(f["evidence"].get("runbook") == "high-latency" and "p95" in f["detail"] for f in rec["findings"])
    pm = _one_postmortem_with_charts(Path(result["postmortem"]))
    timeline = pm[pm.index("## Timeline"):pm.index("## Charts")]
    order = ["High latency detected", "Incident identified: high-latency", "Action allowed", "Latency recovered", "Incident recovered"]
    assert not [word for word in order if word not in timeline], timeline
    positions = [timeline.index(word) for word in order]
    assert positions == sorted(positions), timeline
    assert "is slow since revision" in pm and "dispatched the high-latency runbook" in pm


def test_crash_alert_is_routed_to_the_pod_crash_runbook(env: LatencyEnv) -> None:
    env.inject_crash()
    result = env.run_flow("incident", **_incident(alertname="PodCrashLooping", runbook_overrides={
        "stable_seconds": 5, "recovery_timeout_seconds": 150, "verify_window_seconds": 30, "verify_timeout_seconds": 150}))
    run_id = result["flow_run_id"]
    assert result["state"] == "COMPLETED", result
    assert "pod-crash" in _subflows(env, run_id)
    rec = env.record_of(run_id, FLOW)
    assert any(f["evidence"].get("kind") == "classification" and f["evidence"]["runbook"] == "pod-crash" for f in rec["findings"])
    assert rec["outcome"] == "resolved" and env.crash_looping() == []
    for kind in ("opened", "mitigated", "resolved"):
        assert kind in env.latest(run_id, f"{FLOW}-communicate-{kind}")["data"].lower()
    pm = _one_postmortem_with_charts(Path(result["postmortem"]))
    timeline = pm[pm.index("## Timeline"):pm.index("## Charts")]
    order = ["Incident identified: pod-crash", "Incident detected: ", "Action allowed", "Verified", "Incident recovered"]
    assert not [word for word in order if word not in timeline], timeline
    positions = [timeline.index(word) for word in order]
    assert positions == sorted(positions), timeline
    assert "roll back shop/deployment/checkout" in pm
