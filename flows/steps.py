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


def called_tasks(fn: Callable[..., object]) -> set[str]:
    """Names of the Prefect tasks (defined in `tasks/`) a step calls, directly or through the flows' own helper
    functions: read from the source, so the binding test checks what each step really calls."""
    import ast
    import inspect
    import sys
    import textwrap

    from prefect import Task

    found: set[str] = set()
    seen: set[object] = set()

    def visit(func: Callable[..., object]) -> None:
        func = inspect.unwrap(func)
        if func in seen:
            return
        seen.add(func)
        module = sys.modules.get(func.__module__)
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        except (OSError, TypeError):
            return
        for node in ast.walk(tree):
            for target, name in _called(node, module):
                if isinstance(target, Task):
                    if target.fn.__module__.startswith("tasks."):
                        found.add(target.fn.__name__)
                elif callable(target) and getattr(target, "__module__", "").startswith("flows.") and name != "step":
                    visit(target)

    visit(fn)
    return found


def _called(node: object, module: object) -> list[tuple[object, str]]:
    """What a call node calls, resolved in `module`: `f(...)`, `tasks_module.f(...)`, and functions passed as
    arguments (`step(run, identify, ...)`)."""
    import ast
    import types

    if not isinstance(node, ast.Call):
        return []
    out: list[tuple[object, str]] = []
    func = node.func
    if isinstance(func, ast.Name):
        out.append((getattr(module, func.id, None), func.id))
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = getattr(module, func.value.id, None)
        if isinstance(owner, types.ModuleType):
            out.append((getattr(owner, func.attr, None), func.attr))
    out += [(getattr(module, a.id, None), a.id) for a in node.args if isinstance(a, ast.Name)]
    return out
