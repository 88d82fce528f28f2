"""How robust is the diagnosis engine's dev-set score? The dev cases perturbed as an unseen case could be, each
perturbation scored apart with the product's CLI exactly as bench/diagnosis.py scores the dev set.

    .venv/bin/python bench/diagnosis_robustness.py [--dev-set DIR|FILE.tar.xz] [--quick] [--only KIND ...]
                                                  [--keep DIR] [--out FILE]

Perturbations (bench/_perturb.py): `rename` (every workload, Service, pod, node, namespace and private IP renamed
consistently everywhere, the names' own words kept), `rename-opaque` (the same with unrelated words),
`reorder` (rows of kubectl tables and events, and the tools' call order, shuffled), `drop` (one optional tool
output removed at random: all logs, the alerts, the metrics or one describe), `truncate` (each log cut to its
last 30 lines, each error-log summary to its first 2 patterns), `symptom` (the symptom replaced by words that name
no layer), `shift` (the snapshot taken 5 minutes later: every age older; absolute timestamps moved by 400 days).
Each perturbed case carries its own answer (the renamed fault object), so it is scored against that.

For each: A@1 / A@3 / fault object overall and per category, against the unperturbed run in the same bench
(which cases were lost or won), the confusions, cases the CLI could not read or that made it print an error or a
traceback (a perturbation must degrade the diagnosis, never crash it), and for `drop` which output was dropped
in the cases lost. `--keep DIR` leaves the perturbed copies there (to replay one case by hand); `--quick` runs on
the 49 pinned cases of the repository (a smoke run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _harness as h
import _perturb
import _perturb_clock
import diagnosis as d  # bench/diagnosis.py: the dev set, the answers, the CLI run and the scoring


def perturb_all(dev: Path, kind: str, dest: Path) -> dict[str, dict[str, Any]]:
    from k8s_runbooks.diagnosis.sources.cloud_opsbench import find_cases

    info = {}
    started = time.monotonic()
    for path in find_cases(dev):
        rel = str(path.relative_to(dev))
        info[rel] = _perturb.perturb(path, dest / rel, rel, kind)
    print(f"{kind}: {len(info)} cases written in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return info


def _hits(records: list[dict[str, Any]], answers: dict[str, dict[str, str]]) -> dict[str, tuple[bool, bool, bool]]:
    by_case = {r["case"]: r for r in records}
    out = {}
    for rel, truth in answers.items():
        r = by_case.get(rel) or {}
        labels = r.get("root_causes") or []
        out[rel] = (labels[:1] == [truth["root_cause"]], truth["root_cause"] in labels[:3], r.get("fault_object") == truth["fault_object"])
    return out


def scored_run(dev: Path, scratch: Path, name: str) -> tuple[dict[str, Any], dict[str, tuple[bool, bool, bool]], dict[str, Any]]:
    answers_path = scratch / f"answers-{name}.jsonl"
    answers = d.write_answers(dev, answers_path)
    run = d.run_cli(dev, answers_path, scratch / f"run-{name}.jsonl", seed=1, scratch=scratch)
    print(f"{name}: CLI {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU", file=sys.stderr, flush=True)
    s = d.score(run["records"], answers)
    return s, _hits(run["records"], answers), {"answers": answers, "run": run}


def compare(kind: str, s: dict[str, Any], hits: dict[str, tuple[bool, bool, bool]], base: dict[str, tuple[bool, bool, bool]],
            ctx: dict[str, Any], info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    lost = sorted(c for c in hits if base.get(c, (False,))[0] and not hits[c][0])
    won = sorted(c for c in hits if not base.get(c, (True,))[0] and hits[c][0])
    lost_obj = sorted(c for c in hits if base.get(c, (0, 0, False))[2] and not hits[c][2])
    run = ctx["run"]
    misses = {m["case"]: m for m in s["misses"]}
    result: dict[str, Any] = {
        "kind": kind, "cases": s["cases"], "a1": s["a1"], "a3": s["a3"], "object": s["object"],
        "per_category": s["per_category"], "confusions": s["confusions"],
        "lost_a1": [{**misses.get(c, {"case": c}), **({"perturbation": info[c]} if info.get(c) else {})} for c in lost],
        "won_a1": won, "lost_object": [o for o in s["object_misses"] if o["case"] in lost_obj],
        "unreadable": s["unreadable"], "error_lines": run["error_lines"][:20], "traceback": run["traceback"],
        "guardrail_violations": len(s["guardrail_violations"]),
        "cli_wall_s": round(run["wall_s"], 1), "cli_cpu_s": round(run["cpu_s"], 1),
        "network_attempts": len(run["network_attempts"]),
    }
    if kind == "drop":
        dropped = Counter(str(i.get("dropped", "?")).split(" ")[0] for i in info.values())
        lost_by = Counter(str(info[c].get("dropped", "?")).split(" ")[0] for c in lost)
        result["dropped"] = {k: {"cases": n, "lost_a1": lost_by.get(k, 0)} for k, n in sorted(dropped.items())}
    if kind.startswith("rename"):
        result["leftover_old_names"] = sum(int(i.get("leftover_old_names", 0)) for i in info.values())
    return result


def report(base: dict[str, Any], results: list[dict[str, Any]]) -> None:
    print(f"\n{base['cases']} cases; unperturbed A@1 {base['a1']}  A@3 {base['a3']}  object {base['object']}")
    print("\n| perturbation | A@1 | A@3 | object | lost A@1 | won A@1 | unreadable | errors | traceback |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| none | {base['a1']:.3f} | {base['a3']:.3f} | {base['object']:.3f} | - | - | {len(base['unreadable'])} | - | - |")
    for r in results:
        print(f"| {r['kind']} | {r['a1']:.3f} | {r['a3']:.3f} | {r['object']:.3f} | {len(r['lost_a1'])} | {len(r['won_a1'])} | "
              f"{len(r['unreadable'])} | {len(r['error_lines'])} | {r['traceback']} |")
    cats = sorted(base["per_category"])
    print("\nA@1 per category:\n| category | none | " + " | ".join(r["kind"] for r in results) + " |")
    print("|---|" + "---:|" * (len(results) + 1))
    for c in cats:
        print(f"| {c} | {base['per_category'][c]['a1']:.2f} | "
              + " | ".join(f"{r['per_category'].get(c, {}).get('a1', 0) or 0:.2f}" for r in results) + " |")
    for r in results:
        for pair in r["confusions"][:10]:
            print(f"{r['kind']}: confused {pair['answer']} -> {pair['top']} ({pair['cases']})")
        if r.get("dropped"):
            print(f"{r['kind']}: " + ", ".join(f"{k} dropped in {v['cases']} cases ({v['lost_a1']} lost)" for k, v in r["dropped"].items()))
        if "leftover_old_names" in r:
            print(f"{r['kind']}: old names left after renaming: {r['leftover_old_names']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev-set", type=Path, help=f"case folder or .tar.xz (default {d.DEFAULT_DEV})")
    parser.add_argument("--quick", action="store_true", help="the repository's 49 pinned cases: a smoke run")
    parser.add_argument("--only", nargs="*", choices=_perturb.KINDS, help="only these perturbations")
    parser.add_argument("--keep", type=Path, help="write the perturbed copies here and leave them")
    parser.add_argument("--out", help="JSON results file (bench/run.py: bench/results/diagnosis_robustness.json)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-robustness-"))
    try:
        try:
            dev, source = d.resolve_dev_set(args.dev_set, args.quick, scratch)
        except d.Skip as exc:
            print(f"diagnosis robustness bench skipped: {exc}", file=sys.stderr)
            h.write_out(args.out, {"skipped": str(exc)})
            return 0
        base, base_hits, _ = scored_run(dev, scratch, "none")
        results = []
        for kind in args.only or _perturb.KINDS:
            where = (args.keep or scratch) / kind
            shutil.rmtree(where, ignore_errors=True)
            info = perturb_all(dev, kind, where)
            s, hits, ctx = scored_run(where, scratch, kind)
            results.append(compare(kind, s, hits, base_hits, ctx, info))
            if args.keep is None:
                shutil.rmtree(where, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    data = {"dev_set": source, "quick": args.quick, "cases": base["cases"],
            "none": {k: base[k] for k in ("a1", "a3", "object", "per_category", "confusions", "unreadable")},
            "perturbations": results,
            "age_shift_s": _perturb_clock.AGE_SHIFT.total_seconds(), "clock_shift_s": _perturb_clock.CLOCK_SHIFT.total_seconds()}
    h.write_out(args.out, data)
    report(data["none"] | {"cases": base["cases"]}, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
