"""The Markdown runbook and the flow must describe the same steps, in the same order.

Fails when a runbook step has no automation, when the flow declares a step the runbook lacks, or when
a binding names a task that does not exist in tasks/.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import flows.drills
import flows.high_latency
import flows.incident_response
import flows.pod_crash
import tasks
from flows.steps import declared_steps
from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir

RUNBOOKS = [(m.FLOW, m.RUNBOOK_PATH) for m in (flows.pod_crash, flows.high_latency, flows.incident_response)]
RUNBOOKS += [(f, flows.drills.RUNBOOKS[f]) for f in flows.drills.FLOWS]


def _task_names() -> set[str]:
    names: set[str] = set()
    for mod in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{mod.name}")
        names.update(n for n in dir(module) if not n.startswith("_"))
    return names


def test_every_runbook_file_is_bound_to_a_flow() -> None:
    assert sorted(p for _, p in RUNBOOKS) == sorted(runbooks_dir().glob("*.md"))


@pytest.mark.parametrize(("FLOW", "RUNBOOK_PATH"), RUNBOOKS, ids=[f for f, _ in RUNBOOKS])
def test_every_runbook_step_is_automated_and_every_flow_step_documented(FLOW: str, RUNBOOK_PATH: Path) -> None:  # noqa: N803
    runbook = load_runbook(RUNBOOK_PATH)
    assert runbook.flow == FLOW
    flow_steps = declared_steps(FLOW)
    missing_in_flow = [s for s in runbook.step_ids if s not in flow_steps]
    missing_in_runbook = [s for s in flow_steps if s not in runbook.step_ids]
    assert not missing_in_flow, f"runbook steps without a flow step: {missing_in_flow}"
    assert not missing_in_runbook, f"flow steps missing from {RUNBOOK_PATH.name}: {missing_in_runbook}"
    assert runbook.step_ids == flow_steps, "the runbook and the flow list the steps in a different order"


@pytest.mark.parametrize("RUNBOOK_PATH", [p for _, p in RUNBOOKS], ids=[f for f, _ in RUNBOOKS])
def test_bound_tasks_exist(RUNBOOK_PATH: Path) -> None:  # noqa: N803
    runbook = load_runbook(RUNBOOK_PATH)
    available = _task_names()
    unknown = {step.id: [t for t in step.tasks if t not in available] for step in runbook.steps}
    assert not any(unknown.values()), f"bindings name tasks that tasks/ does not define: {unknown}"


@pytest.mark.parametrize(("FLOW", "RUNBOOK_PATH"), RUNBOOKS, ids=[f for f, _ in RUNBOOKS])
def test_each_step_calls_exactly_the_tasks_its_runbook_names(FLOW: str, RUNBOOK_PATH: Path) -> None:  # noqa: N803
    from flows.steps import _STEPS, called_tasks

    runbook = load_runbook(RUNBOOK_PATH)
    mismatched = {}
    for step in runbook.steps:
        called = called_tasks(_STEPS[FLOW][step.id])
        if set(step.tasks) != called:
            mismatched[step.id] = {"runbook says": sorted(step.tasks), "step calls": sorted(called)}
    assert not mismatched, f"{RUNBOOK_PATH.name}: the tasks= bindings differ from what the steps call: {mismatched}"


def test_called_tasks_follows_helpers_and_would_catch_a_missing_binding() -> None:
    import flows.pod_crash as pod_crash
    from flows.steps import called_tasks

    # identify reaches collect_evidence through flows.diagnosis.identify_causes, and contain reaches
    # plan_is_allowed through flows.common.seek_approval: helpers are followed, not only the step's own body.
    assert {"collect_evidence", "diagnose_evidence"} <= called_tasks(pod_crash.identify)
    assert called_tasks(pod_crash.contain) == {"plan_is_allowed", "workload_status"}  # the approval re-reads the workload
    assert "execute_action" not in called_tasks(pod_crash.contain)  # contain changes nothing by itself
