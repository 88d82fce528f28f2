"""The sandbox's own faults, replayed offline from their recorded snapshots (tests/fixtures/snapshots, written
by tests/sandbox_runtime/test_fault_diagnosis.py): the same cause and the same answer, with no cluster, and a
snapshot is only evidence (no secret in it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.snapshot import read_snapshot
from tests.sandbox_runtime.test_fault_diagnosis import DEPLOY, EXPECTED, FIXTURES, RESTARTS


def test_every_fault_family_has_a_snapshot() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_snapshot_replays_the_diagnosis(kind: str) -> None:
    evidence, symptom = read_snapshot(FIXTURES / f"{kind}.json")
    diagnosis = diagnose(evidence, symptom, focus=DEPLOY)
    cause, answer, change = EXPECTED[kind]
    assert diagnosis.top is not None and diagnosis.top.cause.value == cause, [h.cause.value for h in diagnosis.hypotheses]
    step = plan(diagnosis.hypotheses)[0]
    if answer == "escalate":
        assert step.action is None and step.escalation is not None and change in step.escalation.change
    else:
        assert step.action is not None and step.action.kind.value == answer
    assert not (step.action and step.action.kind.value in RESTARTS)


def test_snapshots_hold_no_secret_values(tmp_path: Path) -> None:
    for path in FIXTURES.glob("*.json"):
        data = json.loads(path.read_text())
        assert data["kind"] == "k8s-runbooks/snapshot"
        secrets = data["evidence"].get("secrets")
        assert secrets is None, f"{path.name}: secrets are never collected"


def test_every_free_text_field_of_evidence_is_redacted() -> None:
    """A password pasted anywhere a source copies text (env values of workloads, pods and revisions, container
    messages, events, logs, connection coordinates, alerts) is gone after the source's redaction pass."""
    from k8s_runbooks.diagnosis import evidence as ev
    from k8s_runbooks.diagnosis.sources.redaction import redact_evidence

    leak = "postgres://app:hunter2-XYZZY@db:5432/shop"
    spec = ev.PodSpec(containers=[ev.Container(name="app", env=[ev.EnvVar(name="DB_URL", value=leak)])])
    evidence = ev.Evidence(
        namespace="x",
        workloads=[ev.Workload(name="w", namespace="x", template=spec.model_copy(deep=True))],
        replicasets=[ev.ReplicaSet(name="w-1", namespace="x", template=spec.model_copy(deep=True))],
        pods=[ev.Pod(name="w-1-a", namespace="x", spec=spec.model_copy(deep=True),
                     containers=[ev.ContainerStatus(name="app", state=ev.ContainerState(state="waiting", message=leak))])],
        events=[ev.Event(object=ev.ObjectRef(kind="Pod", name="w-1-a"), reason="Failed", message=leak)],
        logs=[ev.LogExcerpt(workload="w", lines=[f"connecting to {leak}"])],
        config_maps=[ev.NamedKeys(name="cfg", coordinates={"DATABASE_URL": leak})],
        anomalies=[ev.Anomaly(entity="w", category="X", detail=leak)],
    )
    assert redact_evidence(evidence) >= 8
    assert "hunter2-XYZZY" not in evidence.model_dump_json()
