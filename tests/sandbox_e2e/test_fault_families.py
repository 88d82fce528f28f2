"""Every cluster fault family end to end, as in production: the fault (through the guard) → the kube-state-metrics
alert fires in Prometheus/Alertmanager → Alertmanager's webhook reaches the alert receiver → the receiver starts the
routed runbook deployment (incident-response; pod-crash for a crash loop) on the sandbox runner → the runbook
diagnoses the right cause → it takes the right action through the guard, or escalates with the exact change →
the post-mortem names the cause.

One sandbox (the session's) and one namespace per family (`fam-*`, routed by tests/alert-routes.test.yaml with
auto approval and short windows). The families run side by side: each mostly waits (alert `for`, rollouts), so
the module takes about as long as its slowest family. `taint` covers every node, so it runs alone at the end."""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks.drills.families import FAMILY_RESPONSES, FamilyResponse
from k8s_runbooks.models import ActionKind, AuditRecord
from k8s_runbooks.postmortem.model import RunRecord
from k8s_runbooks.sandbox import demo_workload, supervisor
from k8s_runbooks.sandbox.settings import SandboxSettings
from tests.conftest import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SUFFIX = "".join(random.choices(string.ascii_lowercase, k=4))
DEPLOY = "web"
REPLICAS = 2
FAMILY_TIMEOUT = 420.0  # fault → run finished, per family (they overlap)


FAMILIES = FAMILY_RESPONSES
ALONE = ("taint",)  # touches every node: run after the others


def namespace_of(kind: str) -> str:
    return f"fam-{''.join(w[0] for w in kind.split('-'))}{len(kind)}-{SUFFIX}"


@dataclass
class Outcome:
    kind: str
    namespace: str
    injected_at: datetime | None = None
    alert_at: datetime | None = None
    run_id: str | None = None
    run: dict[str, Any] | None = None
    record: RunRecord | None = None
    causes: list[dict[str, Any]] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    postmortem: str = ""
    uids_before: set[str] = field(default_factory=set)
    uids_after: set[str] = field(default_factory=set)
    error: str = ""
    done: bool = False


class Chain:
    """Follows each family's chain through the real services' APIs (nothing is called in-process but the fault)."""

    def __init__(self, box: Sandbox) -> None:
        assert box.prefect_api_url and box.state_dir
        self.box = box
        self.cfg = supervisor.SandboxConfig.from_settings(SandboxSettings(), box.state_dir)
        self.prefect = httpx.Client(base_url=box.prefect_api_url, timeout=15)
        self.am = httpx.Client(base_url=box.alertmanager_url, timeout=10)
        api = k8s_config.new_client_from_config(str(box.kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.runbook_state = box.state_dir / "runbooks"  # the runner's guard audit; the fault command's too
        self.reports = box.state_dir / "reports"
        self.deployment_ids = {name: self.prefect.get(f"/deployments/name/{name}/{name}").json()["id"]
                               for name in ("incident-response", "pod-crash")}
        self.started = datetime.now(timezone.utc)

    def pod_uids(self, ns: str) -> set[str]:
        return {p.metadata.uid for p in self.core.list_namespaced_pod(ns, label_selector=f"app={DEPLOY}").items
                if not p.metadata.deletion_timestamp}

    def inject(self, out: Outcome) -> None:
        out.injected_at = datetime.now(timezone.utc)
        supervisor.fault(self.cfg, out.kind, out.namespace, DEPLOY)

    def alert(self, out: Outcome, name: str) -> bool:
        r = self.am.get("/api/v2/alerts", params=[("filter", f'alertname="{name}"'), ("filter", f'namespace="{out.namespace}"'),
                                                  ("active", "true")])
        r.raise_for_status()
        if r.json():
            out.alert_at = datetime.now(timezone.utc)
        return bool(r.json())

    def runbook_run(self, out: Outcome, runbook: str) -> dict[str, Any] | None:
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_ids[runbook]]}}, "sort": "EXPECTED_START_TIME_ASC",
                "limit": 200}
        r = self.prefect.post("/flow_runs/filter", json=body)
        r.raise_for_status()
        mine = [run for run in r.json() if (run.get("parameters") or {}).get("params", {}).get("namespace") == out.namespace]
        return mine[0] if mine else None

    def read(self, out: Outcome) -> None:
        assert out.run_id
        arts = self.prefect.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [out.run_id]}}}).json()
        records = sorted((a for a in arts if (a.get("key") or "").endswith("-record") and isinstance(a.get("data"), str)),
                         key=lambda a: a["created"])
        out.record = RunRecord.from_markdown(records[-1]["data"]) if records else None
        causes = sorted((a for a in arts if (a.get("key") or "").endswith("-causes")), key=lambda a: a["created"])
        if causes:
            data = causes[0]["data"]
            out.causes = json.loads(data) if isinstance(data, str) else data
        audit = self.runbook_state / "audit.jsonl"
        lines = audit.read_text().splitlines() if audit.exists() else []
        out.audit = [r for r in (AuditRecord.model_validate_json(line) for line in lines if line.strip())
                     if r.action.target.namespace == out.namespace]
        path = self.reports / out.run_id / "postmortem.md"
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(1)
        out.postmortem = path.read_text() if path.exists() else ""


def _step(chain: Chain, out: Outcome, exp: FamilyResponse) -> None:
    """Advance one family's chain by what is observable now."""
    if out.alert_at is None:
        chain.alert(out, exp.alerts[0])
    if out.run_id is None:
        run = chain.runbook_run(out, exp.runbook.split("/")[0])
        if run is not None:
            out.run_id = run["id"]
        return
    run = chain.prefect.get(f"/flow_runs/{out.run_id}").json()
    state = (run.get("state") or {}).get("type")
    if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        out.run = run
        out.uids_after = chain.pod_uids(out.namespace)
        chain.read(out)
        out.done = True


def _run_families(chain: Chain, kinds: list[str]) -> dict[str, Outcome]:
    outs = {k: Outcome(k, namespace_of(k)) for k in kinds}
    for out in outs.values():
        try:
            chain.inject(out)
        except Exception as exc:  # noqa: BLE001 - reported by that family's test
            out.error, out.done = f"inject failed: {exc}", True
    # The missing Secret's recreated pod is the one that stays: UIDs are taken once it exists.
    for out in outs.values():
        if out.kind == "missing-secret" and not out.done:
            deadline = time.monotonic() + 30
            while len(chain.pod_uids(out.namespace)) < REPLICAS and time.monotonic() < deadline:
                time.sleep(0.5)
            out.uids_before = chain.pod_uids(out.namespace)
    deadline = time.monotonic() + FAMILY_TIMEOUT
    while time.monotonic() < deadline and not all(o.done for o in outs.values()):
        for out in outs.values():
            if not out.done:
                try:
                    _step(chain, out, FAMILIES[out.kind])
                except (httpx.HTTPError, ValueError) as exc:
                    out.error = f"poll: {exc}"  # transient: the next round tries again
        time.sleep(1.0)
    for out in outs.values():
        if not out.done:
            out.error = (f"not finished after {FAMILY_TIMEOUT:.0f} s: alert {'fired' if out.alert_at else 'not fired'}, "
                         f"run {out.run_id or 'not started'}")
        try:
            supervisor.fault(chain.cfg, "clear", out.namespace, DEPLOY)
        except Exception as exc:  # noqa: BLE001
            out.error += f"; clear failed: {exc}"
    return outs


@pytest.fixture(scope="module")
def outcomes(sandbox_only: Sandbox) -> Iterator[dict[str, Outcome]]:
    box = sandbox_only
    chain = Chain(box)
    for kind in FAMILIES:
        demo_workload.ensure_workload(box.kubeconfig, namespace_of(kind), {DEPLOY: REPLICAS})
    for kind in FAMILIES:
        demo_workload.wait_ready(box.kubeconfig, namespace_of(kind), [DEPLOY], timeout_s=180)
    results = _run_families(chain, [k for k in FAMILIES if k not in ALONE])
    results |= _run_families(chain, list(ALONE))
    yield results
    for kind in FAMILIES:
        try:
            chain.core.delete_namespace(namespace_of(kind))
        except k8s.ApiException:
            pass


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_family_alert_runbook_diagnosis_answer_postmortem(outcomes: dict[str, Outcome], kind: str) -> None:
    out, exp = outcomes[kind], FAMILIES[kind]
    ns = out.namespace
    assert not out.error, out.error
    assert out.alert_at is not None, f"{exp.alerts[0]} never fired for {ns}"
    assert out.run is not None and out.record is not None, f"no finished {exp.runbook} run for {ns}"
    rec = out.record
    # the right diagnosis: the ranked causes the run published, and the record's hypotheses
    assert out.causes and out.causes[0]["cause"] == exp.cause, out.causes[:3]
    assert rec.hypotheses and rec.hypotheses[0].cause.value == exp.cause, [h.cause.value for h in rec.hypotheses[:3]]
    mine = [r for r in out.audit if r.flow_run_id and r.actor not in ("sandbox-cli", "drill")]
    executed = [r for r in mine if r.decision.value == "allowed" and r.outcome and not r.outcome.startswith("dry-run")]
    if exp.escalates:
        assert rec.outcome == "escalated", (rec.outcome, rec.outcome_detail)
        change = exp.exact_change(ns, DEPLOY)
        steps = [s for s in rec.plan if s.escalation is not None]
        assert steps and change in steps[0].escalation.change, [s.escalation.change for s in steps][:2]
        assert not executed, f"an escalation changed the cluster: {[r.action.describe() for r in executed]}"
        assert change in out.postmortem
    else:
        kinds = [r.action.kind.value for r in executed]
        assert exp.answer in kinds, f"expected {exp.answer} through the guard, audit has {kinds}: {rec.outcome_detail}"
        assert not {ActionKind.delete_pods.value, ActionKind.rollout_restart.value} & set(kinds), kinds
        assert rec.outcome == "resolved", (rec.outcome, rec.outcome_detail)
    assert exp.cause in out.postmortem, f"the post-mortem does not name {exp.cause}"


def test_missing_secret_with_auto_approval_touches_no_pod(outcomes: dict[str, Outcome]) -> None:
    """The issue's "done when": approval auto, the Secret deleted under a healthy revision: no pod is deleted,
    restarted or rolled back, and the escalation names the Secret."""
    out = outcomes["missing-secret"]
    assert not out.error, out.error
    assert out.run is not None and out.record is not None
    assert (out.run.get("parameters") or {})["params"]["approval"] == "auto"
    assert out.uids_before and out.uids_after == out.uids_before, "a pod was deleted or replaced during the run"
    assert [r for r in out.audit if r.flow_run_id and r.actor not in ("sandbox-cli", "drill")] == [], \
        "the guard recorded an action of the runbook"
    top = out.record.hypotheses[0]
    assert top.details.get("introduced_by_revision") is None, "the revision was blamed for a deleted Secret"
    assert f"Secret {DEPLOY}-db-credentials" in out.record.outcome_detail + " ".join(
        s.escalation.summary for s in out.record.plan if s.escalation)
