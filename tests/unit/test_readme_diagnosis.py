"""The README's table of causes is the fix table: every cause the engine knows is there, and its row names what
`plan()` really does for it (the action kind, or an escalation; a rollback for template causes a revision brought)."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.evidence import ObjectRef
from k8s_runbooks.diagnosis.hypothesis import Cause, Hypothesis
from k8s_runbooks.diagnosis.plan import TEMPLATE_CAUSES, plan_step
from tests.conftest import REPO

# What the planner needs to act when it can: the limits it doubles, the replicas to restore, the outlier pods.
DETAILS = {"memory_limit": "256Mi", "cpu_limit": "500m", "container": "app", "replicas": "3", "pods": "web-1"}


def _rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Diagnosis: what the runbooks conclude"):text.index("## The sandbox")]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            for cause in re.findall(r"`([a-z0-9-]+)`", cells[1]):
                assert cause not in rows, f"{cause} is in two rows"
                rows[cause] = cells[2]
    return rows


def _answer(cause: Cause, **details: str) -> str:
    h = Hypothesis(cause=cause, object=ObjectRef(kind="Deployment", name="web", namespace="shop"), confidence=0.9,
                   summary="s", details={**DETAILS, **details})
    step = plan_step(h)
    return step.action.kind.value if step.action is not None else "escalate"


def test_every_cause_has_a_row() -> None:
    assert set(_rows()) == {c.value for c in Cause}


REVISION = {"introduced_by_revision": "2", "previous_revision": "1"}
BY_REVISION = {Cause.crash_after_rollout, Cause.slow_revision}  # a revision is what these causes are about


def test_each_row_says_what_the_plan_does() -> None:
    rows = _rows()
    said = {c: _answer(c, **(REVISION if c in BY_REVISION else {})) for c in Cause}
    wrong = {c.value: (a, rows[c.value]) for c, a in said.items()
             if not rows[c.value].startswith("escalate" if a == "escalate" else f"`{a}`")}
    assert not wrong, wrong
    # A template cause the newest revision brought is rolled back (the paragraph above the table says so).
    assert {_answer(c, **REVISION) for c in TEMPLATE_CAUSES} == {"rollout_undo"}
