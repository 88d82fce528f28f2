"""The fault-family drill's scoring without a cluster: which phases a family drill has, when diagnose counts as met
(the expected cause first, in time), and that a family a person fixes is scored on its escalation, not a recovery.
Also: every family has a response, a route that starts it, and a prefect.yaml deployment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from flows.drills import FAMILY_FLOW, DrillCtx, _phases, resolve_fault
from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.families import FAMILY_RESPONSES
from k8s_runbooks.drills.model import DrillParams, FaultSpec, Scorecard
from k8s_runbooks.postmortem.model import RunRecord
from k8s_runbooks_prefect import deploy
from tasks.drills import fault_action, removal_action
from tests.conftest import REPO

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=timezone.utc)


def ctx(kind: str, **times: float | str | None) -> DrillCtx:
    params = DrillParams(namespace="drill-a", deployment="web", fault=FaultSpec(kind=kind))  # type: ignore[arg-type]
    c = DrillCtx(flow=FAMILY_FLOW, scenario="family", params=params, fault=resolve_fault("family", params), flow_run_id="r",
                 card=Scorecard(namespace="drill-a", deployment="web"), record=RunRecord(flow=FAMILY_FLOW, runbook_title="t",
                                                                                      namespace="drill-a", deployment="web"),
                 response_path="alert", injected_at=T0)
    for name, value in times.items():
        if name == "cause":
            c.diagnosed_cause = str(value)
        elif value is not None:
            setattr(c, name, T0 + timedelta(seconds=float(value)))  # type: ignore[arg-type]
    return c


def test_a_family_the_runbook_fixes_is_scored_on_detect_diagnose_recover() -> None:
    c = ctx("image-not-found", alert_at=8, runbook_running_at=9, diagnosed_at=12, recovered_at=70, cause="image-not-found")
    phases = {p.name: p for p in _phases(c)}
    assert list(phases) == ["detect", "respond", "diagnose", "recover"]
    assert (phases["detect"].seconds, phases["diagnose"].seconds, phases["recover"].seconds) == (8, 4, 70)
    assert all(p.met for p in phases.values())


def test_the_wrong_cause_first_misses_diagnose_however_fast() -> None:
    c = ctx("image-not-found", alert_at=8, runbook_running_at=9, diagnosed_at=10, recovered_at=70, cause="registry-unresolvable")
    diagnose = next(p for p in _phases(c) if p.name == "diagnose")
    assert diagnose.met is False and "expected image-not-found" in diagnose.detail


def test_a_family_a_person_fixes_is_scored_on_its_escalation() -> None:
    c = ctx("missing-secret", alert_at=6, runbook_running_at=7, diagnosed_at=9, escalated_at=15, cause="secret-missing")
    phases = {p.name: p for p in _phases(c)}
    assert list(phases) == ["detect", "respond", "diagnose", "escalate"], "no recovery is expected before the rollback"
    assert phases["escalate"].seconds == 15 and phases["escalate"].met
    missed = ctx("missing-secret", alert_at=6, runbook_running_at=7, diagnosed_at=9, cause="secret-missing")
    assert next(p for p in _phases(missed) if p.name == "escalate").met is False, "no escalation is a miss"


@pytest.mark.parametrize("kind", list(CLUSTER_FAULTS))
def test_each_family_is_injected_and_rolled_back_through_the_guard_and_deployed(kind: str) -> None:
    action = fault_action("drill-a", "web", FaultSpec(kind=kind))  # type: ignore[arg-type]
    assert action.kind.value == "inject_fault" and action.patch == {"fault": kind}
    assert removal_action("drill-a", "web").patch["clear_faults"] is True  # type: ignore[index]
    assert kind in FAMILY_RESPONSES
    spec = next(s for s in deploy.SPECS if s.name == f"drill-{kind}")
    assert spec.flow_name == FAMILY_FLOW and spec.parameters["params"]["fault"] == {"kind": kind} and not spec.sandbox_schedule


def test_every_family_alert_is_routed_to_the_runbook_that_answers_it() -> None:
    for path in ("deployments/alert-routes.yaml", "deployments/alert-routes.sandbox.yaml"):
        routes = yaml.safe_load((REPO / path).read_text())["routes"]
        for kind, exp in FAMILY_RESPONSES.items():
            first = next(r for r in routes if r.get("match", {}).get("alertname") == exp.alerts[0])
            assert first["deployment"] == exp.runbook, (path, kind, first["name"])
