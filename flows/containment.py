"""Containment in the runbooks: the options that limit impact while the cause is fixed, offered after the fix.

`choose` asks for the approval: the fix actions first (what `auto` takes), then the containment options that
apply (`k8s_runbooks.containment.options`). When no action of the runbook fixes the cause, the containment
options are still offered — to a person only (approval `required`) — before the escalation.

`carry_out` runs what was chosen. A fix: re-checked, executed, waited for (as before). A containment option:
executed through the guard, then a second approval offers the fix (or, on the approver's request, the undo of
the containment alone); after the fix the containment is undone — traffic restored, flags set back, replicas
scaled back gradually with each step validated. Without a fix the run escalates with the containment in place
and says how to undo it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from flows.common import Approval, Recovery, Run, StopRunbook, execute_and_wait, seek_approval
from flows.diagnosis import Identified, actions_for, escalate, escalation_of
from k8s_runbooks import containment
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.models import Action, ActionKind, ActionResult, Decision, Severity
from k8s_runbooks.postmortem.render import md_code_block, md_text
from tasks.remediation import containment_options, execute_action, scale_back_gradually


@dataclass(frozen=True)
class Choice:
    """The approved action, the fixes that were offered (for after a containment) and the facts the
    containment options rest on (what their undo puts back)."""

    approval: Approval
    fixes: list[Action]
    facts: containment.Facts | None


@dataclass(frozen=True)
class Condition:
    """The runbook's alert condition (breached when `query` > `threshold`): each scale-back step waits for it."""

    query: str
    threshold: float = 0.0


def choose(run: Run[Any], step: str, found: Identified, extra: str = "", *, fixes_here: bool = True) -> Choice:
    """Approval of the fix with the containment options as alternatives; with no fix (or `fixes_here=False`: the
    caller only escalates), of the containment options alone (a person only), before the escalation. Escalates
    when there is nothing to approve."""
    p = run.params
    fixes = actions_for(found, run.target, p.allow_all_replicas) if fixes_here else []
    facts, options = containment_options(p.namespace, p.deployment, p.allow_all_replicas)
    for note in facts.notes:
        run.note("Containment option unavailable", note, "note")
    if fixes:
        return Choice(seek_approval(run, step, containment.arrange(fixes, options), extra), fixes, facts)
    if not options or p.approval != "required" or found.top is None:
        if options:
            run.note("Containment options need a person", f"{', '.join(a.kind.value for a in options)} offered only with "
                     f"approval=required (this run: {p.approval})", "note")
        escalate(run, step, found)
    summary, change = escalation_of(found)
    md = ("## No action of this runbook fixes the cause\n\n" + md_text(summary) + "\n\n" + (md_code_block(change, "bash") if change else "")
          + "\nThe options below only limit the impact; the run escalates after the chosen one. Reject to escalate now.")
    return Choice(seek_approval(run, step, options, extra + "\n\n" + md if extra else md), [], facts)


def carry_out(run: Run[Any], step: str, choice: Choice, found: Identified, recheck: Callable[[], object],
              condition: Condition | None) -> Recovery:
    """Run the chosen action (see the module doc). `recheck` re-reads the evidence before acting on an approval
    given earlier; `condition` is what a scale-back step must see clear."""
    action = choice.approval.action
    if not containment.is_containment(action):
        if run.params.approval == "required":
            recheck()
        return execute_and_wait(run, step, choice.approval)
    if not choice.fixes:
        contain_and_escalate(run, step, choice, found, recheck)
    if run.params.approval == "required":
        recheck()
    assert choice.facts is not None
    result = _contain(run, choice)
    if not result.executed:
        run.record.outcome, run.record.outcome_detail = "dry-run", "plan and audit recorded; nothing was changed"
        return Recovery(result)
    undo = containment.undo_of(action, choice.facts)
    # The evidence is now masked by the containment (no pods, no traffic to the bad revision, the flag off):
    # the fix is decided on the diagnosis already made, and a person approves it again.
    run.note("Contained; the fix comes next", "the diagnosis made before the containment stands; approve the fix, or the undo "
             "of the containment alone", "step")
    then = seek_approval(run, step, containment.arrange(choice.fixes, [undo] if undo else []))
    if undo is not None and then.action == undo:
        recovery = Recovery(result)
        run.note(f"Undo of the containment requested by {then.actor}", then.action.describe(), "approval")
    else:
        recovery = execute_and_wait(run, step, then)
    if undo is not None:
        _undo(run, step, undo, choice.facts, condition, then.actor)
    if recovery.health is None:
        run.record.outcome, run.record.outcome_detail = "mitigated", f"{action.describe()}, then undone by {then.actor}"
    return recovery


def contain_and_escalate(run: Run[Any], step: str, choice: Choice, found: Identified, recheck: Callable[[], object]) -> NoReturn:
    """No action fixes the cause: run the containment a person chose, then escalate with it in place, saying how
    to undo it."""
    if run.params.approval == "required":
        recheck()
    assert choice.facts is not None
    action = choice.approval.action
    result = _contain(run, choice)
    contained = f"{action.describe()} (undo: {containment.undo_command(action, choice.facts)})" if result.executed else ""
    escalate(run, step, found, contained=contained)


def _contain(run: Run[Any], choice: Choice) -> ActionResult:
    """The containment action through the guard; a refusal ends the run escalated."""
    action = choice.approval.action
    result = execute_action(action, run.params.approval, choice.approval.actor, run.flow_run_id)
    run.record.actions.append(result)
    run.note(f"Containment {result.decision.value}: {action.describe()}", result.detail, "action")
    if result.decision is Decision.refused:
        raise StopRunbook("escalated", f"the guard refused {action.kind.value}: {result.detail}; escalated", failed=True)
    return result


def _undo(run: Run[Any], step: str, undo: Action, facts: containment.Facts, condition: Condition | None, actor: str) -> None:
    """Put the containment back: scale back gradually (each step validated), or one guarded action."""
    p = run.params
    if undo.kind is ActionKind.scale:
        report = scale_back_gradually(p.namespace, p.deployment, facts.replicas, 1, p.approval, actor, run.flow_run_id,
                                      stable_seconds=min(getattr(p, "stable_seconds", 20), 30),
                                      step_timeout_seconds=getattr(p, "recovery_timeout_seconds", 180),
                                      condition_query=condition.query if condition else None,
                                      condition_threshold=condition.threshold if condition else 0.0)
        run.record.actions.extend(report.results)
        run.evidence(step, "Gradual scale-back", "text", "\n".join(report.validations) or "no step taken")
        if not report.complete:
            run.finding(step, f"Scale-back stopped at {report.reached} of {report.target} replicas", Severity.critical,
                        detail=report.stopped, kind="escalation")
            raise RunbookError(f"scale-back of {run.target} stopped at {report.reached}/{report.target}: {report.stopped}")
        run.note(f"Scaled back to {report.target} replicas, each step validated", "; ".join(report.validations), "recovered")
        return
    result = execute_action(undo, p.approval, actor, run.flow_run_id)
    run.record.actions.append(result)
    run.note(f"Containment undone ({result.decision.value}): {undo.describe()}", result.detail, "action")
    if not result.executed:
        raise RunbookError(f"the containment could not be undone ({result.decision.value}): {result.detail}")
