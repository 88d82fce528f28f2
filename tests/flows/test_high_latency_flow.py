"""The high-latency flow end to end against the session sandbox (cluster, Prometheus, Prefect server),
plus its pure diagnosis/ranking functions.

Flows run in their own process, as the CLI runs them; this process plays the on-call engineer. Tests run
in file order on shop/checkout: no diagnosis (payments), CPU burn under a low limit (dry-run, then
restored), and a latency fault whose approved rollback must bring p95 back under the threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.evidence import Evidence
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.models import ActionKind
from k8s_runbooks.prom import promql
from k8s_runbooks.sandbox.demo_workload import STRATEGIC, ensure_workload, set_fault, wait_ready
from tests.conftest import REPO, Sandbox
from tests.flows.test_pod_crash_flow import Env, wait_for

NS = "shop"
WINDOW = "20s"
RUNNER = """
import json, sys
from flows.params import HighLatencyParams, IncidentParams
kind, body = sys.argv[1], sys.argv[2]
if kind == "high-latency":
    from flows.high_latency import run_high_latency as run
    params = HighLatencyParams.model_validate_json(body)
else:
    from flows.incident_response import run_incident as run
    params = IncidentParams.model_validate_json(body)
flow_run_id, state, path = run(params)
print(json.dumps({"flow_run_id": flow_run_id, "state": state.type.value, "name": state.name,
                  "message": state.message, "postmortem": str(path) if path else None}), flush=True)
"""


# ------------------------------------------------------------------------------------ the judgment (pure)
def _evidence(by_pod: dict[str, float], *, before: float | None = None, live: set[str] | None = None,
              throttled: dict[str, float] | None = None) -> Evidence:
    """checkout with revisions 1 (checkout-old) and 2 (checkout-new), pods as named, and a latency measurement."""
    tpl = ev.PodSpec(labels={"app": "checkout"}, containers=[ev.Container(name="checkout", image="shop:2", limits={"cpu": "100m"})])
    old_tpl = tpl.model_copy(update={"containers": [ev.Container(name="checkout", image="shop:1", limits={"cpu": "100m"})]})
    pods = [ev.Pod(name=n, namespace=NS, workload="checkout", status="Running", labels={"app": "checkout"},
                   owner=ev.ObjectRef(kind="ReplicaSet", name=n.rsplit("-", 1)[0], namespace=NS),
                   containers=[ev.ContainerStatus(name="checkout", ready=True)]) for n in sorted(live if live is not None else by_pod)]
    anomalies = [ev.Anomaly(entity="checkout", category="RESOURCE_SATURATION",
                            detail=f"RESOURCE_SATURATION [cpu_cfs] | Val: {v:.3f} (Throttled share of periods, pod {p})")
                 for p, v in (throttled or {}).items()]
    return Evidence(namespace=NS, pods=pods, anomalies=anomalies,
                    workloads=[ev.Workload(name="checkout", namespace=NS, replicas=len(by_pod), ready_replicas=len(by_pod), template=tpl)],
                    replicasets=[ev.ReplicaSet(name="checkout-old", namespace=NS, owner="checkout", revision=1, template=old_tpl),
                                 ev.ReplicaSet(name="checkout-new", namespace=NS, owner="checkout", revision=2, template=tpl)],
                    latency=[ev.LatencyObservation(service="checkout", workload="checkout", threshold_ms=300,
                                                   current_ms=max(by_pod.values()), by_pod_ms=by_pod,
                                                   newest_revision=2, before_newest_revision_ms=before)])


def _causes(e: Evidence) -> list[str]:
    return [h.cause.value for h in diagnose(e).hypotheses]


def test_outliers_are_pods_much_slower_than_the_median_not_a_slow_service() -> None:
    found = diagnose(_evidence({"checkout-new-a": 20, "checkout-new-b": 25, "checkout-new-c": 900}))
    assert found.top is not None and found.top.cause.value == "slow-pods" and found.top.details["pods"] == "checkout-new-c"
    step = plan(found.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.delete_pods and step.action.pods == ["checkout-new-c"]
    # Every pod slow: service-wide, restarting pods would not help.
    assert "slow-pods" not in _causes(_evidence({"checkout-new-a": 800, "checkout-new-b": 820, "checkout-new-c": 810}))


def test_a_slow_revision_needs_a_fast_p95_from_when_it_began() -> None:
    slow = {"checkout-new-a": 900, "checkout-new-b": 950}
    found = diagnose(_evidence(slow, before=40))
    assert found.top is not None and found.top.cause.value == "slow-revision"
    step = plan(found.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.rollout_undo
    assert "slow-revision" not in _causes(_evidence(slow, before=None))  # no data from then: not known to be faster
    assert "slow-revision" not in _causes(_evidence(slow, before=500))  # already slow before the rollout


def test_pods_a_rollout_replaced_do_not_speak_against_it_but_live_pods_of_other_revisions_do() -> None:
    # Prometheus' window still holds a replaced pod's slow requests (CI): it no longer exists, so it does not count.
    gone = _evidence({"checkout-new-x": 900, "checkout-new-y": 950, "checkout-old-a": 400}, before=40,
                     live={"checkout-new-x", "checkout-new-y"})
    assert _causes(gone)[0] == "slow-revision"
    alive = _evidence({"checkout-new-x": 900, "checkout-old-b": 700}, before=40)
    assert "slow-revision" not in _causes(alive)


def test_cpu_throttling_while_slow_raises_the_limit_through_the_guard_form() -> None:
    found = diagnose(_evidence({"checkout-new-a": 500, "checkout-new-b": 520}, throttled={"checkout-new-a": 0.8}))
    assert found.top is not None and found.top.cause.value == "cpu-saturated"
    step = plan(found.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.patch_resources
    assert step.action.patch == {"checkout": {"limits": {"cpu": "200m"}}}


# ------------------------------------------------------------------------------------ against the sandbox
class LatencyEnv(Env):
    def start_flow(self, kind: str, **body: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", RUNNER, kind, json.dumps(body)], cwd=REPO, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run_flow(self, kind: str, **body: Any) -> dict[str, Any]:
        return self.finish(self.start_flow(kind, **body), timeout=300)

    def latency(self, **params: Any) -> dict[str, Any]:
        body = {"namespace": NS, "service": "checkout", "rate_window": WINDOW, "stable_seconds": 5, "recovery_timeout_seconds": 150,
                "monitor_stable_seconds": 10, "monitor_timeout_seconds": 150, "chart_lookback_minutes": 2, **params}
        return body

    def paused(self, flow_name: str, since: str, proc: subprocess.Popen[str]) -> str:
        def find() -> str | None:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the {flow_name} flow ended before asking for approval:\n{out[-2000:]}\n{err[-6000:]}")
            r = self.api.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}, "start_time": {"after_": since}},
                                                         "flows": {"name": {"any_": [flow_name]}}})
            r.raise_for_status()
            return r.json()[0]["id"] if r.json() else None
        return wait_for(find, 180, f"a paused {flow_name} run")

    def record_of(self, run_id: str, flow: str) -> dict[str, Any]:
        from k8s_runbooks.postmortem.model import RunRecord

        rec = RunRecord.from_markdown(self.latest(run_id, f"{flow}-record")["data"])
        assert rec is not None
        return json.loads(rec.model_dump_json())

    def prom(self, query: str) -> float | None:
        r = httpx.get(f"{self.box.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
        r.raise_for_status()
        values = [float(s["value"][1]) for s in r.json()["data"]["result"]]
        values = [v for v in values if v == v]
        return max(values) if values else None

    def p95_ms(self, service: str) -> float | None:
        v = self.prom(promql.latency_quantile(NS, service, 0.95, WINDOW))
        return None if v is None else v * 1000

    def throttling(self) -> float | None:
        return self.prom(promql.cpu_throttling_ratio(NS, "checkout", WINDOW))

    def patch_checkout(self, container: dict[str, Any]) -> None:
        body = {"spec": {"template": {"spec": {"containers": [{"name": "checkout", **container}]}}}}
        self.apps.patch_namespaced_deployment("checkout", NS, body, _content_type=STRATEGIC)
        wait_ready(self.box.kubeconfig, NS, ["checkout"], timeout_s=120)

    def inject_latency(self) -> None:
        # The engine blames the new revision only when p95 from before it is known: let Prometheus see it fast first.
        wait_for(lambda: (ms := self.p95_ms("checkout")) is not None and ms < 300, 90, "a fast checkout p95 in Prometheus")
        set_fault(self.box.kubeconfig, NS, "checkout", "latency", "800")
        wait_ready(self.box.kubeconfig, NS, ["checkout"], timeout_s=120)
        wait_for(lambda: (self.p95_ms("checkout") or 0) > 300, 90, "checkout p95 above 300 ms in Prometheus")


@pytest.fixture(scope="module")
def env(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LatencyEnv]:
    if not sandbox.is_sandbox:
        pytest.skip("injects faults: sandbox only")
    e = LatencyEnv(sandbox, tmp_path_factory.mktemp("high-latency-flow"))
    wait_ready(sandbox.kubeconfig, NS, ["checkout", "payments"], timeout_s=120)
    yield e
    set_fault(sandbox.kubeconfig, NS, "checkout", "clear")


def test_no_diagnosis_escalates_with_evidence_and_changes_nothing(env: LatencyEnv) -> None:
    wait_for(lambda: env.p95_ms("payments"), 60, "payments latency in Prometheus")
    before = env.snapshot()
    # Every payments pod is "slow" against 1 ms, but nothing explains it: no throttling, no rollout, no outlier.
    result = env.run_flow("high-latency", **env.latency(service="payments", p95_threshold_ms=1, approval="auto"))
    after = env.snapshot()
    assert result["state"] == "FAILED" and "no diagnosis" in (result["message"] or ""), result
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    rec = env.record_of(result["flow_run_id"], "high-latency")
    assert rec["outcome"] == "escalated" and rec["actions"] == []
    assert {"high_latency", "no_diagnosis"} <= {f["evidence"].get("kind") for f in rec["findings"]}
    assert any(e["kind"] == "query" and "histogram_quantile" in e["content"] for e in rec["evidence"])
    assert env.audit(result["flow_run_id"]) == []
    assert "escalated" in env.latest(result["flow_run_id"], "high-latency-communicate-status")["data"]


def test_a_rollout_is_not_blamed_without_a_p95_from_before_it(env: LatencyEnv) -> None:
    """The previous revision never served (scaled to zero here; crash-looping pods look the same to Prometheus):
    every pod of the new one is "slow" against 1 ms, but nothing shows the previous revision was faster, so no
    roll-back onto it is proposed (it used to be: CI once saw payments rolled back onto a crash-looping revision)."""
    name = "fresh-rollout"
    ensure_workload(env.box.kubeconfig, NS, {name: 0})
    try:  # revision 1 must exist before the template changes, or the change is revision 1
        wait_for(lambda: env.apps.read_namespaced_deployment(name, NS).status.observed_generation, 30, f"{name} revision 1")
        env.apps.patch_namespaced_deployment(name, NS, {"spec": {"replicas": 2, "template": {"metadata": {"annotations": {
            "k8s-runbooks.io/test": "second-revision"}}}}})
        wait_ready(env.box.kubeconfig, NS, [name], timeout_s=120)
        wait_for(lambda: env.p95_ms(name), 90, f"{name} latency in Prometheus")
        result = env.run_flow("high-latency", **env.latency(service=name, p95_threshold_ms=1, approval="dry-run"))
        rec = env.record_of(result["flow_run_id"], "high-latency")
        kinds = {f["evidence"].get("kind") for f in rec["findings"]}
        assert "slow-revision" not in kinds and "no_diagnosis" in kinds, rec["findings"]
        assert any("no p95 from before it" in e["event"] for e in rec["timeline"]), [e["event"] for e in rec["timeline"]]
        assert not [a for a in env.audit(result["flow_run_id"]) if a["action"]["kind"] == "rollout_undo"]
    finally:
        env.apps.delete_namespaced_deployment(name, NS, _preload_content=False)
        env.core.delete_namespaced_service(name, NS, _preload_content=False)


def test_cpu_burn_under_a_low_limit_is_diagnosed_as_throttling_and_the_limit_patch_proposed(env: LatencyEnv) -> None:
    env.patch_checkout({"env": [{"name": "FAULT_CPU_BURN", "value": "1.0"}], "resources": {"limits": {"cpu": "100m"}}})
    try:
        # Both preconditions of the diagnosis, read the way the flow reads them: throttled pods and a slow service.
        wait_for(lambda: (env.throttling() or 0) > 0.5 and (env.p95_ms("checkout") or 0) > 40, 120,
                 "checkout CPU throttling and p95 above 40 ms in Prometheus")
        before = env.snapshot()
        result = env.run_flow("high-latency", **env.latency(approval="dry-run", p95_threshold_ms=20))
        after = env.snapshot()
    finally:
        env.patch_checkout({"env": [{"name": "FAULT_CPU_BURN", "$patch": "delete"}], "resources": {"limits": {"cpu": "500m"}}})
    assert result["state"] == "COMPLETED", result
    assert before["deployments"] == after["deployments"] and set(before["pods"]) == set(after["pods"])
    run_id = result["flow_run_id"]
    rec = env.record_of(run_id, "high-latency")
    throttled = [f for f in rec["findings"] if f["evidence"].get("kind") == "cpu_throttling"]
    pods_table = env.latest(run_id, "high-latency-check-metrics-pods")["data"]
    assert throttled, f"outcome {rec['outcome']}: {rec['outcome_detail']}\nfindings: {rec['findings']}\npods: {pods_table}"
    assert all(f["evidence"]["pod"].startswith("checkout-") for f in throttled)
    assert rec["outcome"] == "dry-run"
    assert [(a["action"]["kind"], a["decision"]) for a in rec["actions"]] == [("patch_resources", "dry-run")]
    assert rec["actions"][0]["action"]["patch"] == {"checkout": {"limits": {"cpu": "200m"}}}
    assert rec["hypotheses"][0]["cause"] == "cpu-saturated"
    plan = env.latest(run_id, "high-latency-resolve-plan")["data"]
    assert "patch_resources" in plan and "-  cpu: 100m" in plan and "+  cpu: 200m" in plan
    table = json.loads(env.latest(run_id, "high-latency-check-metrics-pods")["data"])
    assert any(row["throttled %"] and row["throttled %"] > 25 for row in table)


def test_latency_fault_on_checkout_is_found_and_the_approved_rollback_recovers_p95(env: LatencyEnv) -> None:
    env.inject_latency()
    assert (env.p95_ms("payments") or 0) < 300  # the fault is on checkout only
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    proc = env.start_flow("high-latency", **env.latency(approval="required", approval_timeout_seconds=300))
    try:
        run_id = env.paused("high-latency", since, proc)
        rec = env.record_of(run_id, "high-latency")
        latency = [f for f in rec["findings"] if f["evidence"].get("kind") == "high_latency"]
        assert latency and latency[0]["evidence"]["p95_ms"] > 300 and latency[0]["evidence"]["service"] == "checkout"
        slow = next(f for f in rec["findings"] if f["evidence"].get("kind") == "slow_pods_measured")["evidence"]["pods"]
        assert slow and all(p.startswith("checkout-") for p in slow)
        assert rec["hypotheses"][0]["cause"] == "slow-revision", rec["hypotheses"][:2]
        description = env.api.get(f"/flow_runs/{run_id}/input/paused-1-description").json()
        assert "rollout_undo" in description
        answer = env.resume(run_id, {"approve": True, "action": "rollout_undo", "approver": "alice", "comment": "slow deploy"})
        assert answer["status"] == "ACCEPT", answer
        result = env.finish(proc, timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["state"] == "COMPLETED", result
    rec = env.record_of(run_id, "high-latency")
    assert rec["outcome"] == "resolved"
    assert [(a["action"]["kind"], a["executed"]) for a in rec["actions"]] == [("rollout_undo", True)]
    assert any(e["kind"] == "recovered" and e["event"].startswith("Latency recovered") for e in rec["timeline"])
    assert (env.p95_ms("checkout") or 1e9) < 300
    pm_path = Path(result["postmortem"])
    pm = pm_path.read_text()
    assert "## Charts" in pm and "![Latency of shop/checkout](<charts/latency.png>)" in pm
    assert {p.name for p in (pm_path.parent / "charts").glob("*.png")} == {"latency.png", "error-rate.png", "restarts.png", "cpu-throttling.png"}
    assert pm_path.with_suffix(".html").read_text().count('src="data:image/png;base64,') == 4
    assert "slow-revision" in pm and "Approved by alice" in pm
    assert json.loads(env.latest(run_id, "high-latency-chart-latency")["data"])
