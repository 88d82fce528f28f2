"""Per cluster fault family: time to detect (fault → alert firing), to diagnose (alert → the runbook's ranked causes,
the right cause first) and to recover (fault → steady again) or to escalate (fault → the runbook escalated with the
exact change), as the family drills measure them through the real alert path of a full sandbox.

    .venv/bin/python bench/families.py [--rounds 3] [--quick] [--out FILE]

Each round runs one `k8s-runbooks drill family --fault KIND --response alert --json` per family, side by side in
their own `drill-*` namespaces (routed by deployments/alert-routes.sandbox.yaml, auto approval); `taint` covers
every node and runs alone after the others. Figures: the median over the rounds of each phase, and how many rounds
passed (right cause first, answered, rolled back)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import _harness as h  # bench/ is sys.path[0] when run as a script

from k8s_runbooks.drills.families import FAMILY_RESPONSES
from k8s_runbooks.sandbox import demo_workload

DEPLOY = "checkout"
ALONE = ("taint",)
DRILL_TIMEOUT = 900


def namespace(kind: str, round_: int) -> str:
    return f"drill-{''.join(w[0] for w in kind.split('-'))}{len(kind)}-{round_}"


def launch(box: h.Sandbox, kind: str, ns: str) -> subprocess.Popen[str]:
    cmd = [*h.CLI, "drill", "family", "--fault", kind, "-n", ns, "-d", DEPLOY, "--response", "alert", "--json"]
    return subprocess.Popen(cmd, cwd=h.REPO, env={**box.env, "PYTHONPATH": str(h.REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def collect(kind: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=DRILL_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"kind": kind, "error": f"exit {proc.returncode}: {(err or out)[-800:]}"}
    card = json.loads(lines[-1])["scorecard"]
    phases = {p["name"]: p["seconds"] for p in card["phases"]}
    detail = {p["name"]: p["detail"] for p in card["phases"]}
    return {"kind": kind, "outcome": card["outcome"], "detail": card["outcome_detail"], "phases": phases,
            "diagnosis": detail.get("diagnose", "")}


def run_round(box: h.Sandbox, round_: int, families: list[str]) -> list[dict[str, Any]]:
    kinds = [k for k in families if k not in ALONE]
    for kind in families:
        demo_workload.ensure_workload(box.kubeconfig, namespace(kind, round_), {DEPLOY: 2})
    for kind in families:
        demo_workload.wait_ready(box.kubeconfig, namespace(kind, round_), [DEPLOY], timeout_s=180)
    time.sleep(20)  # p95 needs traffic in the latency window before the steady-state check
    results = []
    for batch in (kinds, [k for k in ALONE if k in families]):
        procs = {k: launch(box, k, namespace(k, round_)) for k in batch}
        results += [collect(k, p) for k, p in procs.items()]
    for r in results:
        print(f"round {round_} {r['kind']}: {r.get('outcome', r.get('error'))} {r.get('phases', '')}", flush=True)
    return results


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 1) if got else None


def summarise(rounds: list[list[dict[str, Any]]], families: list[str]) -> dict[str, Any]:
    table = {}
    for kind in families:
        exp = FAMILY_RESPONSES[kind]
        runs = [r for rnd in rounds for r in rnd if r["kind"] == kind]
        ok = [r for r in runs if r.get("outcome") == "passed"]
        phases = [r.get("phases", {}) for r in runs]
        last = "escalate" if exp.escalates else "recover"
        table[kind] = {"alert": exp.alerts[0], "cause": exp.cause, "answer": exp.answer, "runs": len(runs), "passed": len(ok),
                       "detect_s": median([p.get("detect") for p in phases]),
                       "diagnose_s": median([p.get("diagnose") for p in phases]),
                       f"{last}_s": median([p.get(last) for p in phases]),
                       "failures": [r.get("detail") or r.get("error") for r in runs if r not in ok]}
    return table


def markdown(table: dict[str, Any]) -> str:
    lines = ["| family | alert | cause found first | answer | detect (s) | diagnose (s) | recover / escalate (s) | passed |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for kind, t in table.items():
        last = t.get("recover_s", t.get("escalate_s"))
        answer = "escalate" if "escalate_s" in t else t["answer"]
        lines.append(f"| `{kind}` | {t['alert']} | `{t['cause']}` | {answer} | {t['detect_s']} | {t['diagnose_s']} | "
                     f"{last} | {t['passed']}/{t['runs']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--families", nargs="*", choices=list(FAMILY_RESPONSES), default=list(FAMILY_RESPONSES))
    parser.add_argument("--out")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    load_before = os.getloadavg()
    routes = str(h.REPO / "deployments" / "alert-routes.sandbox.yaml")
    with h.state_dir("bench-families-") as directory, h.full_sandbox(
            directory, {"K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES": routes}) as box:
        results = [run_round(box, r, args.families) for r in range(rounds)]
    table = summarise(results, args.families)
    print(markdown(table))
    h.write_out(args.out, {"rounds": rounds, "table": table, "markdown": markdown(table), "raw": results,
                           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": h.machine()})
    return 0 if all(t["passed"] == t["runs"] for t in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
