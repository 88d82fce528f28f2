"""Runbook step registry: `@runbook_step("identify")` binds a flow function to a step of a Markdown runbook.

The binding test compares these ids with the `step=` bindings in runbooks/<flow>.md, so adding or
removing a step on either side without the other fails the test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

_STEPS: dict[str, dict[str, Callable[..., object]]] = {}


def runbook_step(flow: str, step_id: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        steps = _STEPS.setdefault(flow, {})
        if step_id in steps and steps[step_id] is not fn:
            raise ValueError(f"flow {flow!r} declares step {step_id!r} twice")
        steps[step_id] = fn
        fn.runbook_step = step_id  # type: ignore[attr-defined]
        return fn

    return register


def declared_steps(flow: str) -> list[str]:
    """Step ids in declaration order."""
    return list(_STEPS.get(flow, {}))
