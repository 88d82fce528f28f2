"""Regression per root-cause label: one recorded Cloud-OpsBench dev case per label (49 labels, the first case of
each in natural folder order, trimmed to what the importer reads: `tests/fixtures/build_cloud_opsbench.py`).
Each must still be diagnosed as recorded: the top root cause, the fault object and the category equal the
answer in its metadata.json (read here, never by the product). And the plan never answers an admission,
scheduling, startup or routing cause with a restart, a pod deletion or a scale: those cannot fix it.

This is behaviour per label, not a score: the accuracy over the whole dev set is `bench/diagnosis.py`'s job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s_runbooks.diagnosis.batch import case_record
from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.hypothesis import LAYER_OF, Cause, Hypothesis, Layer
from k8s_runbooks.diagnosis.plan import plan, plan_step
from k8s_runbooks.diagnosis.evidence import ObjectRef
from k8s_runbooks.diagnosis.sources.cloud_opsbench import load_case
from k8s_runbooks.models import ActionKind
from tests.helpers.cloud_opsbench import pinned_answers, unpack

GUARDED_LAYERS = {Layer.admission, Layer.scheduling, Layer.startup, Layer.routing}
GUARDED_TAXONOMY = {"Admission_Fault", "Scheduling_Fault", "Startup_Fault", "Service_Routing_Fault"}
BLUNT = {ActionKind.rollout_restart, ActionKind.delete_pods, ActionKind.scale}

CASES = sorted(pinned_answers().items(), key=lambda kv: kv[1]["root_cause"])


@pytest.fixture(scope="module")
def pinned_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(tmp_path_factory.mktemp("opsbench"))


def test_one_pinned_case_per_label() -> None:
    labels = [answer["root_cause"] for _, answer in CASES]
    assert len(labels) == len(set(labels)) == 49, sorted(labels)


@pytest.mark.parametrize(("rel", "answer"), CASES, ids=[answer["root_cause"] for _, answer in CASES])
def test_pinned_case_is_diagnosed_as_recorded(rel: str, answer: dict[str, str], pinned_root: Path) -> None:
    case = load_case(pinned_root / rel)
    diagnosis = diagnose(case.evidence, case.symptom)
    record = case_record(rel, diagnosis, 0.0)
    assert record["root_causes"][:1] == [answer["root_cause"]], (rel, record["root_causes"], record["evidence"])
    assert record["fault_object"] == answer["fault_object"], (rel, record["fault_object"])
    assert record["fault_taxonomy"] == answer["fault_taxonomy"], (rel, record["fault_taxonomy"])
    assert record["evidence"], f"{rel}: the top cause rests on no fact"
    steps = plan(diagnosis.hypotheses)
    assert steps, rel
    for step in steps:
        if LAYER_OF[step.cause] in GUARDED_LAYERS or answer["fault_taxonomy"] in GUARDED_TAXONOMY:
            assert step.action is None or step.action.kind not in BLUNT, (rel, step.cause, step.action)
    if answer["fault_taxonomy"] in GUARDED_TAXONOMY and record["action"] is not None:
        assert record["action"]["kind"] not in {k.value for k in BLUNT}, (rel, record["action"])


@pytest.mark.parametrize("cause", [c for c in Cause if LAYER_OF[c] in GUARDED_LAYERS], ids=lambda c: c.value)
@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
@pytest.mark.parametrize("rolled_out", [False, True], ids=["standing", "newest-revision"])
def test_plan_never_restarts_deletes_or_scales_for_guarded_causes(cause: Cause, kind: str, rolled_out: bool) -> None:
    details = {"introduced_by_revision": "3", "previous_revision": "2"} if rolled_out else {}
    h = Hypothesis(cause=cause, object=ObjectRef(kind=kind, name="web", namespace="shop"), confidence=0.9,
                   summary="test", details=details)
    step = plan_step(h)
    assert step.action is None or step.action.kind not in BLUNT, (cause, step.action)
    assert (step.action is None) != (step.escalation is None), "a step is an action or an escalation, never both"
