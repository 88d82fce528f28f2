"""`k8s-runbooks diagnose` and `k8s-runbooks snapshot`: the diagnosis engine from the command line.

    diagnose --namespace NS [--service S] [--symptom TEXT] [--json]     the current kubeconfig's cluster
    diagnose --snapshot FILE [--json]                                    a stored snapshot, offline
    diagnose --cloud-opsbench DIR --output FILE.jsonl [--answers FILE]   recorded incidents, one line each
    snapshot --namespace NS [--service S] -o FILE                        capture the evidence (redacted JSON)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from k8s_runbooks.errors import ConfigError, InvalidInput

console = Console()
err = Console(stderr=True)


def _print_diagnosis(diagnosis: Any, steps: list[Any], as_json: bool, source: str) -> None:
    if as_json:
        typer.echo(json.dumps(diagnosis_json(diagnosis, steps), indent=1))
        return
    if not diagnosis.hypotheses:
        console.print(f"[bold]No signature matched[/] in {diagnosis.namespace} ({source}); nothing is proposed. "
                      f"Evidence gaps: {'; '.join(diagnosis.notes) or 'none'}")
        return
    table = Table(title=f"Ranked causes in {diagnosis.namespace} ({source}, {diagnosis.elapsed_ms:.0f} ms)", show_lines=True)
    for col in ("#", "cause", "layer", "object", "confidence", "evidence"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(diagnosis.hypotheses[:5], 1):
        table.add_row(str(i), f"{h.cause.value}\n{h.summary}", h.layer.value, f"{h.object.kind}/{h.object.name}",
                      f"{h.confidence:.2f}", "\n".join(str(f) for f in h.facts[:4]))
    console.print(table)
    for step in steps:
        if step.action is not None:
            console.print(f"[bold green]action[/] ({step.cause.value}): {step.action.describe()} — {step.action.reason}")
        elif step.escalation is not None:
            console.print(f"[bold yellow]escalate[/] ({step.cause.value}): {step.escalation.summary}\n  {step.escalation.change}")


def diagnosis_json(diagnosis: Any, steps: list[Any]) -> dict[str, Any]:
    return {
        "namespace": diagnosis.namespace,
        "symptom": diagnosis.symptom,
        "matched": diagnosis.matched,
        "elapsed_ms": diagnosis.elapsed_ms,
        "hypotheses": [{"cause": h.cause.value, "layer": h.layer.value, "object": f"{h.object.kind}/{h.object.name}",
                        "namespace": h.object.namespace, "confidence": h.confidence, "summary": h.summary,
                        "evidence": [f.model_dump() for f in h.facts], "details": h.details} for h in diagnosis.hypotheses],
        "plan": [{"cause": s.cause.value, "object": f"{s.object.kind}/{s.object.name}",
                  "action": {"kind": s.action.kind.value, "target": str(s.action.target), "reason": s.action.reason,
                             "patch": s.action.patch, "replicas": s.action.replicas} if s.action else None,
                  "escalation": s.escalation.model_dump() if s.escalation else None} for s in steps],
        "notes": diagnosis.notes,
    }


def diagnose_cmd(
    namespace: str = typer.Option(None, "--namespace", "-n", help="Namespace to diagnose (live cluster)."),
    service: str = typer.Option(None, "--service", "-s", help="The service or workload the incident is about (ranks it first)."),
    symptom: str = typer.Option("", "--symptom", help="What was observed, e.g. 'Service abnormal restart.' or an alert name."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    snapshot: Path = typer.Option(None, "--snapshot", help="Diagnose a stored snapshot file instead of the live cluster."),
    cloud_opsbench: Path = typer.Option(None, "--cloud-opsbench", help="Folder of recorded Cloud-OpsBench cases."),
    output: Path = typer.Option(None, "--output", "-o", help="JSON-lines output for --cloud-opsbench."),
    answers: Path = typer.Option(None, "--answers", help="JSON-lines answers to score --cloud-opsbench against."),
) -> None:
    """Rank the likely causes of an incident with the facts each rests on, and the fix or escalation for each."""
    modes = [m for m in (namespace and not snapshot, snapshot, cloud_opsbench) if m]
    if len(modes) != 1:
        raise InvalidInput("give exactly one of --namespace (live), --snapshot FILE or --cloud-opsbench DIR")
    if cloud_opsbench is not None:
        _batch(cloud_opsbench, output, answers)
        return
    from k8s_runbooks.diagnosis.engine import diagnose
    from k8s_runbooks.diagnosis.plan import plan

    if snapshot is not None:
        from k8s_runbooks.diagnosis.sources.snapshot import read_snapshot

        evidence, stored_symptom = read_snapshot(snapshot)
        diagnosis = diagnose(evidence, symptom or stored_symptom, focus=service)
        _print_diagnosis(diagnosis, plan(diagnosis.hypotheses), as_json, f"snapshot {snapshot}")
        return
    from k8s_runbooks.diagnosis.sources.live import collect

    started = time.perf_counter()
    evidence = collect(namespace, service=service, progress=None if as_json else lambda m: err.print(f"[dim]{m}[/]"))
    diagnosis = diagnose(evidence, symptom, focus=service)
    if not as_json:
        err.print(f"[dim]collected and diagnosed in {(time.perf_counter() - started):.2f} s[/]")
    _print_diagnosis(diagnosis, plan(diagnosis.hypotheses), as_json, "live")


def _batch(root: Path, output: Path | None, answers_path: Path | None) -> None:
    from k8s_runbooks.diagnosis.batch import load_answers, run_cases, score

    if output is None:
        raise InvalidInput("--cloud-opsbench needs --output FILE.jsonl")
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder")
    answers = None
    if answers_path is not None:
        try:
            answers = load_answers(answers_path)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read answers: {exc}") from None
    records = []
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as fh:
            for record in run_cases(root, lambda m: err.print(m, highlight=False, soft_wrap=True)):
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                records.append(record)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc}") from None
    failed = sum(1 for r in records if "error" in r)
    times = sorted(r["ms"] for r in records if "ms" in r)
    median = times[len(times) // 2] if times else 0.0
    err.print(f"{len(records)} cases, {failed} unreadable, median {median:.1f} ms per case -> {output}")
    if answers is not None:
        _print_score(score([r for r in records if "error" not in r], answers))


def _print_score(s: Any) -> None:
    if not s.n:
        err.print("no case of the output has an answer")
        return
    table = Table(title=f"A@1 {s.a1 / s.n:.3f}  A@3 {s.a3 / s.n:.3f}  object {s.obj / s.n:.3f}  ({s.n} cases)")
    for col in ("category", "cases", "A@1", "A@3", "object"):
        table.add_column(col)
    for cat, (n, a1, a3, obj) in sorted(s.per_category.items()):
        table.add_row(cat, str(n), f"{a1 / n:.2f}", f"{a3 / n:.2f}", f"{obj / n:.2f}")
    Console(stderr=True).print(table)


def snapshot_cmd(
    namespace: str = typer.Option(..., "--namespace", "-n", help="Namespace to capture."),
    service: str = typer.Option(None, "--service", "-s", help="The service or workload the incident is about."),
    symptom: str = typer.Option("", "--symptom", help="What was observed; stored with the snapshot."),
    out: Path = typer.Option(..., "--output", "-o", help="Snapshot file to write (JSON)."),
) -> None:
    """Capture the evidence of a live incident as a redacted, versioned JSON snapshot (replay: diagnose --snapshot)."""
    from k8s_runbooks.diagnosis.sources.live import collect
    from k8s_runbooks.diagnosis.sources.snapshot import write_snapshot

    evidence = collect(namespace, service=service, progress=lambda m: err.print(f"[dim]{m}[/]"))
    size = write_snapshot(out, evidence, symptom=symptom, service=service)
    err.print(f"snapshot of {namespace}: {len(evidence.pods)} pods, {len(evidence.events)} events, {len(evidence.logs)} log excerpts "
              f"-> {out} ({size / 1024:.0f} KiB)")
    if evidence.notes:
        err.print("not collected: " + "; ".join(evidence.notes))
    sys.stdout.flush()
