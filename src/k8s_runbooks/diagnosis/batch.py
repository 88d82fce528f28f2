"""Diagnose a folder of recorded Cloud-OpsBench cases into JSON lines, one per case, and score them against an
answers file when one is given. A damaged case is one error line on the progress stream; the batch goes on.

The answers are never read from the cases (their metadata holds the key): scoring takes a separate JSON-lines
file `{"case": ..., "root_cause": ..., "fault_object": ..., "fault_taxonomy": ...}` (`bench/diagnosis.py`
writes one from the dev set)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.hypothesis import Diagnosis
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.cloud_opsbench import CaseError, find_cases, load_case
from k8s_runbooks.diagnosis.sources.cloud_opsbench_labels import LABELS, TAXONOMY, fault_object

MAX_CAUSES = 5


def case_record(case: str, diagnosis: Diagnosis, ms: float) -> dict[str, Any]:
    """The benchmark line: ranked benchmark labels, the top hypothesis' object and category, its action."""
    labels: list[str] = []
    for h in diagnosis.hypotheses:
        label = LABELS.get(h.cause)
        if label and label not in labels:
            labels.append(label)
    top = next((h for h in diagnosis.hypotheses if LABELS.get(h.cause)), diagnosis.top)
    step = plan([top])[0] if top else None
    action = None
    if step is not None and step.action is not None:
        action = {"kind": step.action.kind.value, "target": str(step.action.target)}
    return {
        "case": case,
        "root_causes": labels[:MAX_CAUSES],
        "fault_object": fault_object(top.object) if top else None,
        "fault_taxonomy": TAXONOMY[top.layer] if top else None,
        "action": action,
        "escalation": step.escalation.change if step is not None and step.escalation is not None else None,
        "evidence": [str(f) for f in top.facts] if top else [],
        "ms": round(ms, 2),
    }


def run_cases(root: Path, progress: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """Yield one record per case folder under `root` (errors as {"case", "error"} records)."""
    cases = find_cases(root)
    if not cases:
        progress(f"no case folders (metadata.json + tool_cache.json) under {root}")
    for i, path in enumerate(cases, 1):
        rel = str(path.relative_to(root))
        started = time.perf_counter()
        try:
            case = load_case(path)
            diagnosis = diagnose(case.evidence, case.symptom)
        except CaseError as exc:
            progress(f"[{i}/{len(cases)}] {rel}: error: {exc}")
            yield {"case": rel, "error": str(exc)}
            continue
        record = case_record(rel, diagnosis, (time.perf_counter() - started) * 1000)
        progress(f"[{i}/{len(cases)}] {rel}: {', '.join(record['root_causes'][:3]) or 'no signature matched'} "
                 f"({record['fault_object'] or '-'}, {record['ms']:.0f} ms)")
        yield record


@dataclass
class Score:
    n: int = 0
    a1: int = 0
    a3: int = 0
    obj: int = 0
    per_category: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    per_label: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    confusions: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    unanswered: int = 0


def load_answers(path: Path) -> dict[str, dict[str, str]]:
    answers = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            answers[str(item["case"])] = {k: str(item[k]) for k in ("root_cause", "fault_object", "fault_taxonomy") if k in item}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not an answer line ({exc})") from None
    return answers


def score(records: list[dict[str, Any]], answers: dict[str, dict[str, str]]) -> Score:
    s = Score()
    for r in records:
        truth = answers.get(r["case"])
        if truth is None:
            s.unanswered += 1
            continue
        labels = r.get("root_causes") or []
        hit1 = bool(labels) and labels[0] == truth.get("root_cause")
        hit3 = truth.get("root_cause") in labels[:3]
        obj = r.get("fault_object") == truth.get("fault_object")
        s.n += 1
        s.a1, s.a3, s.obj = s.a1 + hit1, s.a3 + hit3, s.obj + obj
        for table, key in ((s.per_category, truth.get("fault_taxonomy", "?")), (s.per_label, truth.get("root_cause", "?"))):
            row = table[key]
            row[0], row[1], row[2], row[3] = row[0] + 1, row[1] + hit1, row[2] + hit3, row[3] + obj
        if not hit1:
            s.confusions[(truth.get("root_cause", "?"), labels[0] if labels else "none")] += 1
    return s
