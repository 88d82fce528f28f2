"""`make bench`: run every benchmark in its own process (so one's memory never colours another's) and
collect the JSON each one writes to bench/results/<name>.json.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--with OPTIONAL_NAME ...]

Each benchmark is a script `bench/<name>.py` with `--quick` (smaller sizes, for a smoke run) and `--out FILE`
(where it writes its figures). Figures are published by hand in BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _harness import machine  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Order: cheapest first, so a quick look at the first figures needs no wait.
BENCHES = ["diagnosis", "postmortem_assembly", "fanout", "overhead", "storm", "memory", "drill_mttd", "alert_to_running",
           "live_diagnosis", "families"]
# Run only when named (`--only NAME`, `--with NAME`): the perturbation bench costs ~8 CPU-minutes (seven perturbed
# copies of the dev set, each diagnosed), which `make bench`'s 15-minute budget has no room for.
OPTIONAL = ["diagnosis_robustness"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not publishable figures")
    parser.add_argument("--only", nargs="*", choices=BENCHES + OPTIONAL, help="run only these benchmarks")
    parser.add_argument("--with", dest="extra", nargs="*", default=[], choices=OPTIONAL, help="also run these optional benchmarks")
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    summary: dict[str, object] = {"machine": machine(), "quick": args.quick, "results": {}}
    failed = []
    for name in args.only or BENCHES + args.extra:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: not present, skipped", flush=True)
            continue
        out = out_dir / f"{name}.json"
        cmd = [sys.executable, str(script), "--out", str(out)] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        rc = subprocess.call(cmd, cwd=REPO)
        took = time.monotonic() - started
        print(f"== {name}: exit {rc} after {took:.0f}s", flush=True)
        if rc != 0:
            failed.append(name)
        results = summary["results"]
        assert isinstance(results, dict)
        results[name] = json.loads(out.read_text()) if rc == 0 and out.exists() else {"error": f"exit {rc}"}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"figures: {out_dir / 'summary.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
