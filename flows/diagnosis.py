"""What every runbook does with the diagnosis engine: collect the evidence (tasks), rank the causes, publish
them with their facts and the evidence snapshot, turn the plan into guarded actions on the runbook's own
workload, escalate with the exact change when no action fixes the cause, and re-check before acting."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from flows.artifacts import artifact_key, publish_markdown, publish_raw_markdown, publish_table
from flows.common import Run, StopRunbook
from k8s_runbooks.diagnosis.evidence import Evidence, LatencyObservation
from k8s_runbooks.diagnosis.hypothesis import Diagnosis, Hypothesis, PlanStep
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.snapshot import snapshot_document
from k8s_runbooks.models import Action, Severity, WorkloadRef
from k8s_runbooks.postmortem.render import md_code_block, md_text
from tasks.diagnosis import collect_evidence, diagnose_evidence

MIN_ACTION_CONFIDENCE = 0.5  # below this a cause is a lead for a person, not a reason to change the cluster
SNAPSHOT_FENCE = "json k8s-runbooks-snapshot"


@dataclass(frozen=True)
class Identified:
    """The evidence, the ranked causes and the plan that answers each (what `identify` hands to `contain`)."""

    evidence: Evidence
    diagnosis: Diagnosis
    steps: list[PlanStep]

    @property
    def top(self) -> Hypothesis | None:
        return self.diagnosis.top


def _finding_title(h: Hypothesis) -> str:
    return f"{h.cause.value} on {h.object.kind}/{h.object.name}: {h.summary}"


def publish_diagnosis(run: Run[Any], step_id: str, found: Identified) -> None:
    """Ranked causes (table + markdown with every fact and the answer to each), the evidence snapshot, and
    the journal's findings and root-cause material."""
    rows = []
    answers = {(s.cause, s.object.name): s for s in found.steps}
    for i, h in enumerate(found.diagnosis.hypotheses, 1):
        s = answers.get((h.cause, h.object.name))
        answer = s.action.describe() if s and s.action else (f"escalate: {s.escalation.summary}" if s and s.escalation else "")
        rows.append({"rank": i, "cause": h.cause.value, "layer": h.layer.value, "object": f"{h.object.kind}/{h.object.name}",
                     "confidence": h.confidence, "summary": h.summary, "answer": answer})
    publish_table(artifact_key(run.flow, step_id, "causes"), rows, "Ranked causes (diagnosis engine)")
    md = [f"# Diagnosis of {md_text(run.params.namespace)} ({found.diagnosis.elapsed_ms:.0f} ms)\n"]
    if not found.diagnosis.hypotheses:
        md.append("No signature matched the evidence: nothing is proposed.\n")
    for i, h in enumerate(found.diagnosis.hypotheses[:5], 1):
        md.append(f"## {i}. {md_text(h.cause.value)} — {md_text(h.object.kind)}/{md_text(h.object.name)} ({h.confidence:.2f})\n")
        md.append(md_text(h.summary) + "\n")
        md += [f"- [{f.source}] {md_text(f.ref)}: {md_text(f.text)}" for f in h.facts]
        s = answers.get((h.cause, h.object.name))
        if s is not None and s.escalation is not None:
            md.append(f"\n**Escalation**: {md_text(s.escalation.summary)}\n")
            md.append(md_code_block(s.escalation.change, "bash"))
        elif s is not None and s.action is not None:
            md.append(f"\n**Action**: {md_text(s.action.describe())} — {md_text(s.action.reason)}\n")
    if found.diagnosis.notes:
        md.append("\n## Evidence gaps\n")
        md += [f"- {md_text(n)}" for n in found.diagnosis.notes]
    publish_markdown(artifact_key(run.flow, step_id, "diagnosis"), "\n".join(md), "Ranked causes, their facts and the fix for each")
    key = artifact_key(run.flow, "snapshot")
    document = json.dumps(snapshot_document(found.evidence, found.diagnosis.symptom, run.params.deployment))
    # Backticks cannot close the fence: JSON strings escape them (the same trick as the run record).
    publish_raw_markdown(key, f"# Evidence snapshot\n\nReplay: save the JSON below and run `k8s-runbooks diagnose --snapshot FILE`.\n\n"
                         f"```{SNAPSHOT_FENCE}\n{document.replace('`', chr(92) + 'u0060')}\n```\n", "redacted evidence the diagnosis was made from")
    rec = run.record
    rec.hypotheses, rec.plan, rec.snapshot_key = list(found.diagnosis.hypotheses), list(found.steps), key
    for i, h in enumerate(found.diagnosis.hypotheses[:3]):
        run.finding(step_id, _finding_title(h), Severity.critical if i == 0 else Severity.warning,
                    detail="; ".join(str(f) for f in h.facts[:3]), kind=h.cause.value, layer=h.layer.value,
                    object=f"{h.object.kind}/{h.object.name}", confidence=h.confidence, **h.details)
    run.evidence(step_id, "Facts behind the ranked causes", "text", "\n".join(
        f"{i}. {h.cause.value} ({h.confidence:.2f}) {h.object.kind}/{h.object.name}\n" + "\n".join(f"   {f}" for f in h.facts)
        for i, h in enumerate(found.diagnosis.hypotheses[:5], 1)) or "no signature matched")


def identify_causes(run: Run[Any], step_id: str, *, focus: str | None, symptom: str,
                    latency: list[LatencyObservation] | None = None) -> Identified:
    p = run.params
    evidence = collect_evidence(p.namespace, focus, latency)
    diagnosis = diagnose_evidence(evidence, symptom, focus)
    found = Identified(evidence=evidence, diagnosis=diagnosis, steps=plan(diagnosis.hypotheses, limit=5))
    publish_diagnosis(run, step_id, found)
    top = found.top
    if top is not None:
        run.note(f"Diagnosis: {top.cause.value} on {top.object.kind}/{top.object.name} ({top.confidence:.2f})", top.summary, "note")
    else:
        run.note("Diagnosis: no signature matched", "; ".join(diagnosis.notes) or "the evidence shows no known failure", "note")
    return found


def actions_for(found: Identified, target: WorkloadRef, allow_all_replicas: bool) -> list[Action]:
    """Guarded actions that fix the most likely cause, on the runbook's own workload: that cause's action first,
    then actions answering lesser causes of the same workload as alternatives. Empty when the cause lies
    elsewhere (a node, a quota, another workload) or no action fixes it: `escalate` then says what to change."""
    top = found.top
    lead = next((s for s in found.steps if top is not None and s.cause is top.cause and s.object.name == top.object.name), None)
    if lead is None or lead.action is None or lead.confidence < MIN_ACTION_CONFIDENCE or lead.action.target != target:
        return []
    out = [lead.action]
    for s in found.steps:
        a = s.action
        if a is not None and s.confidence >= MIN_ACTION_CONFIDENCE and a.target == target and all(x.kind is not a.kind for x in out):
            out.append(a)
    return [a.model_copy(update={"allow_all_replicas": allow_all_replicas or a.allow_all_replicas}) for a in out]


def escalate(run: Run[Any], step_id: str, found: Identified) -> NoReturn:
    """No action fixes the diagnosed cause: say exactly what a person must change, change nothing, end Failed."""
    top = found.top
    if top is None:
        run.finding(step_id, "No known failure signature matched the evidence", Severity.critical,
                    detail="escalated with the evidence; nothing was changed", kind="no_diagnosis")
        run.note("No diagnosis; escalated", "no action is supported by the evidence; nothing was changed", "escalation")
        raise StopRunbook("escalated", "no diagnosis; escalated with the evidence, nothing was changed", failed=True)
    lead = next((s for s in found.steps if s.cause is top.cause and s.object.name == top.object.name), None)
    if lead is not None and lead.escalation is not None:
        change, summary = lead.escalation.change, lead.escalation.summary
    elif lead is not None and lead.action is not None:
        change, summary = lead.action.describe(), f"the fix is on {top.object.kind}/{top.object.name}, outside this runbook's target"
    else:
        change, summary = "", "no fix is known for this cause"
    run.finding(step_id, f"Escalated: {summary}", Severity.critical, detail=change, kind="escalation",
                cause=top.cause.value, change=change)
    run.note(f"Escalated: {top.cause.value}", f"{summary}: {change.splitlines()[0] if change else '-'}", "escalation")
    publish_markdown(artifact_key(run.flow, step_id, "plan"), f"# Escalation\n\n{md_text(summary)}\n\n" + (md_code_block(change, "bash") if change else ""),
                     "The exact change a person should make")
    raise StopRunbook("escalated", f"{top.cause.value}: {summary}; nothing was changed" + (f" — change: {change.splitlines()[0]}" if change else ""),
                      failed=True)


def recheck(run: Run[Any], step_id: str, before: Identified, *, focus: str | None, symptom: str,
            latency: list[LatencyObservation] | None = None) -> Identified:
    """Right before acting on an approval given earlier: read the evidence again. If the trouble is gone or
    the most likely cause changed, act on nothing and end the run saying why."""
    evidence = collect_evidence(run.params.namespace, focus, latency)
    now = diagnose_evidence(evidence, symptom, focus)
    old, new = before.top, now.top
    same = old is not None and new is not None and (old.cause, old.object.name) == (new.cause, new.object.name)
    if same:
        run.note("Re-checked before acting: the diagnosis still holds", f"{new.cause.value} on {new.object.name} ({new.confidence:.2f})")  # type: ignore[union-attr]
        return Identified(evidence, now, plan(now.hypotheses, limit=5))
    if new is None:
        run.note("Re-checked before acting: the problem is gone", "no failure signature matches any more; nothing was changed", "note")
        raise StopRunbook("resolved", "the problem cleared before the approved action ran; nothing was changed", failed=False)
    run.finding(step_id, "The diagnosis changed between approval and action", Severity.warning,
                detail=f"was {old.cause.value if old else 'none'}, now {new.cause.value} on {new.object.kind}/{new.object.name}",
                kind="diagnosis_changed")
    run.note("Re-checked before acting: the diagnosis changed", "the approved action answered the old cause; nothing was changed", "escalation")
    raise StopRunbook("escalated", f"the diagnosis changed before the approved action ran (now {new.cause.value}); nothing was changed",
                      failed=True)
