"""The revision attribution of the diagnosis engine for causes that fail every start of a template (a missing
Secret or ConfigMap, an image that cannot be pulled): pods of the same template running Ready prove the template
works, so the cause is not blamed on the revision and the plan escalates instead of rolling back.

Evidence: the missing-secret snapshot recorded live by tests/sandbox_runtime/test_fault_diagnosis.py (the fault
gives checkout a Secret in a new, healthy revision, then deletes the Secret and recreates one pod)."""

from __future__ import annotations

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.evidence import Evidence
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.snapshot import read_snapshot
from k8s_runbooks.models import ActionKind
from tests.sandbox_runtime.test_fault_diagnosis import DEPLOY, FIXTURES


def _recorded() -> tuple[Evidence, str, str]:
    evidence, symptom = read_snapshot(FIXTURES / "missing-secret.json")
    sets = sorted((r for r in evidence.replicasets if r.owner == DEPLOY), key=lambda r: r.revision or 0)
    assert len(sets) >= 2, "the snapshot holds the revision before the Secret and the one that reads it"
    return evidence, symptom, sets[-1].name


def _waiting(evidence: Evidence, replicaset: str) -> tuple[list[str], list[str]]:
    pods = [p for p in evidence.pods if p.owner and p.owner.name == replicaset]
    ready = [p.name for p in pods if p.status == "Running" and all(c.ready for c in p.containers)]
    stuck = [p.name for p in pods if p.name not in ready and not p.terminating]  # the recreated pod, not started
    return ready, stuck


def test_a_secret_deleted_under_a_healthy_revision_is_escalated_not_rolled_back() -> None:
    evidence, symptom, newest = _recorded()
    ready, stuck = _waiting(evidence, newest)
    assert ready and stuck, "recorded: a Ready pod and a recreated one that cannot start, same revision"
    diagnosis = diagnose(evidence, symptom, focus=DEPLOY)
    top = diagnosis.top
    assert top is not None and top.cause.value == "secret-missing" and top.details.get("secret") == f"{DEPLOY}-db-credentials"
    assert "introduced_by_revision" not in top.details
    step = plan(diagnosis.hypotheses)[0]
    assert step.action is None and step.escalation is not None
    assert f"kubectl create secret generic {DEPLOY}-db-credentials -n {evidence.namespace}" in step.escalation.change


def test_without_a_ready_pod_of_that_revision_the_revision_is_blamed() -> None:
    """The same evidence minus the Ready pods: nothing proves the template, and the newest revision is the one that
    added the Secret reference, so rolling back to the revision that ran without it is the fix."""
    evidence, symptom, newest = _recorded()
    ready, _stuck = _waiting(evidence, newest)
    only_failing = evidence.model_copy(update={"pods": [p for p in evidence.pods if p.name not in ready]})
    diagnosis = diagnose(only_failing, symptom, focus=DEPLOY)
    top = diagnosis.top
    assert top is not None and top.cause.value == "secret-missing"
    revision = next(r.revision for r in evidence.replicasets if r.name == newest)
    assert top.details.get("introduced_by_revision") == str(revision)
    step = plan(diagnosis.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.rollout_undo
