"""The whole alert path with the real binaries: crash fault → Prometheus rule → Alertmanager → receiver →
pod-crash deployment run on the sandbox runner → completed runbook with a post-mortem; the same alert
delivered again → no second run; resolved → no remediation.

Runs in its own namespace (`drill-alert`, routed with auto-approval by deployments/alert-routes.sandbox.yaml)
so other suites' faults in `shop` do not interfere.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun

from k8s_runbooks.sandbox import demo_workload, supervisor
from tests.conftest import Sandbox
from tests.deploy.conftest import runs_of, wait_final, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]
NS, NAME = "drill-alert", "api"


def alert_runs(client: SyncPrefectClient) -> list[FlowRun]:
    return [r for r in runs_of(client, "pod-crash") if r.parameters.get("params", {}).get("namespace") == NS]


def receiver(box: Sandbox) -> tuple[str, dict[str, str]]:
    cfg = supervisor.resolve_config(supervisor.SandboxSettings(), box.state_dir)
    token = supervisor.receiver_token(cfg)
    return f"http://127.0.0.1:{cfg.ports.receiver}", ({"Authorization": f"Bearer {token}"} if token else {})


def as_webhook(alerts: list[dict], status: str) -> dict:
    """Alertmanager API v2 alerts re-sent as a webhook v4 notification (what a repeat would carry)."""
    return {
        "version": "4", "groupKey": "{}:{alertname=\"PodCrashLooping\"}", "truncatedAlerts": 0, "status": status,
        "receiver": "runbooks", "groupLabels": {"alertname": "PodCrashLooping"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager",
        "alerts": [{"status": status, "labels": a["labels"], "annotations": a.get("annotations", {}),
                    "startsAt": a["startsAt"], "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": a.get("generatorURL", ""), "fingerprint": a["fingerprint"]} for a in alerts],
    }


def test_crash_alert_runs_the_runbook_once_per_alert_and_resolved_does_not_remediate(
        prefect_sandbox: Sandbox, client: SyncPrefectClient) -> None:
    box = prefect_sandbox
    demo_workload.ensure_workload(box.kubeconfig, NS, {NAME: 2})
    demo_workload.wait_ready(box.kubeconfig, namespace=NS, names=[NAME], timeout_s=120)
    assert alert_runs(client) == []
    demo_workload.set_fault(box.kubeconfig, NS, NAME, "crash", "2", "alert-path test: panic")
    try:
        firing = supervisor.wait_for_alert(box.alertmanager_url, "PodCrashLooping",
                                           {"namespace": NS, "deployment": NAME}, timeout_s=120)
        runs = wait_for("a pod-crash run created by the receiver", lambda: alert_runs(client), 60)
        # The auto-approved runbook rolls the bad revision back and verifies; the first run does the work.
        final = [wait_final(client, r.id, timeout_s=300) for r in runs]
    finally:
        demo_workload.set_fault(box.kubeconfig, NS, NAME, "clear")
    by_key: dict[str, int] = {}
    for run in alert_runs(client):
        assert run.idempotency_key, "receiver runs carry the alert's idempotency key"
        by_key[run.idempotency_key] = by_key.get(run.idempotency_key, 0) + 1
    assert all(n == 1 for n in by_key.values()), by_key
    assert any(r.state is not None and r.state.is_completed() for r in final), [r.state for r in final]
    params = final[0].parameters["params"]
    assert params["approval"] == "auto" and params["deployment"] == NAME
    assert list((box.state_dir / "reports").rglob("*.md")), "a post-mortem was written"

    # The same alerts again (an Alertmanager repeat): accepted, deduplicated, no new run.
    url, headers = receiver(box)
    before = {r.id for r in alert_runs(client)}
    resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=as_webhook(firing, "firing"), headers=headers, timeout=10)
    assert resp.status_code < 300, resp.text
    # Resolved: recorded, never a remediation.
    resp = httpx.post(f"{url}/v1/alerts/alertmanager", json=as_webhook(firing, "resolved"), headers=headers, timeout=10)
    assert resp.status_code < 300, resp.text
    time.sleep(5)  # the dispatcher works asynchronously; give it time to (wrongly) create a run
    assert {r.id for r in alert_runs(client)} == before
