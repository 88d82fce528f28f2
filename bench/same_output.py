"""Does a change to the importer (or anything under the CLI) leave its output exactly as it was?

    .venv/bin/python bench/same_output.py [--base REF] [--dev-set DIR] [--evidence] [--keep DIR]

Runs `k8s-runbooks diagnose --cloud-opsbench DIR --output F.jsonl` twice, as a user would: once on the source of
git revision REF (default: where this branch left `main`; its `src/` is exported to a temporary folder and put first on PYTHONPATH, the
same virtualenv otherwise) and once on this worktree, then compares the JSON lines with `ms` removed (the only
field allowed to differ). `--evidence` also compares, per case, a digest of the whole imported evidence
(`load_case(...).evidence.model_dump_json()`, the redacted text included): a stricter check than the lines,
which only show the top hypothesis' facts. The base revision's results are kept under `--keep` (default
`/tmp/same-output-cache`) by commit id and dev-set path, so comparing again after each change costs one run.

Exit status 0 when both agree, 1 when they differ (the first differing cases are printed), 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEV = Path("/tmp/cloud-opsbench-dev")

# Run in a subprocess with the chosen source first on sys.path: one digest line per case.
_DIGESTS = r"""
import hashlib, sys
from pathlib import Path
from k8s_runbooks.diagnosis.sources.cloud_opsbench import CaseError, find_cases, load_case
root = Path(sys.argv[1])
for path in find_cases(root):
    rel = str(path.relative_to(root))
    try:
        text = load_case(path).evidence.model_dump_json()
    except CaseError as exc:
        text = "error: " + str(exc)
    print(rel, hashlib.sha256(text.encode()).hexdigest(), flush=True)
"""


def _commit(ref: str | None) -> str:
    if ref is None:  # the branch point: what this branch changed, not what main gained since
        return subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    return subprocess.run(["git", "rev-parse", ref], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def _export(commit: str, dest: Path) -> Path:
    """`src/` of `commit` under dest; returns the folder to put on PYTHONPATH."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "archive", commit, "src"], cwd=REPO, check=True, stdout=fh)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="1", PYTHONPATH=str(src), NO_COLOR="1")
    return env


def _run_cli(src: Path, dev: Path, out: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "k8s_runbooks_cli", "diagnose", "--cloud-opsbench", str(dev), "--output", str(out)],
                          env=_env(src), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the CLI failed on {src}: {proc.stderr.strip().splitlines()[-1:]}")
    return time.monotonic() - started


def _run_digests(src: Path, dev: Path, out: Path) -> None:
    with out.open("w") as fh:
        proc = subprocess.run([sys.executable, "-c", _DIGESTS, str(dev)], env=_env(src), stdout=fh, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the importer failed on {src}: {proc.stderr.strip().splitlines()[-1:]}")


def _lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        record.pop("ms", None)
        out[record["case"]] = json.dumps(record, sort_keys=True)
    return out


def _digests(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())


def _compare(what: str, base: dict[str, str], new: dict[str, str]) -> int:
    differ = sorted(k for k in base.keys() | new.keys() if base.get(k) != new.get(k))
    print(f"{what}: {len(base)} cases in the base, {len(new)} here, {len(differ)} differ")
    for case in differ[:10]:
        print(f"  {case}\n    base: {str(base.get(case))[:400]}\n    here: {str(new.get(case))[:400]}")
    return len(differ)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision to compare with (default: the merge-base of HEAD and main)")
    parser.add_argument("--dev-set", type=Path, default=DEFAULT_DEV, help="folder of cases (default: /tmp/cloud-opsbench-dev)")
    parser.add_argument("--evidence", action="store_true", help="also compare a digest of each case's whole evidence")
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "same-output-cache",
                        help="where the base revision's results are kept between runs")
    args = parser.parse_args()
    if not args.dev_set.is_dir():
        print(f"no dev set at {args.dev_set}: nothing to compare", file=sys.stderr)
        return 2
    commit = _commit(args.base)
    tag = hashlib.sha256(f"{commit} {args.dev_set.resolve()}".encode()).hexdigest()[:16]
    keep = args.keep / tag
    keep.mkdir(parents=True, exist_ok=True)
    here_src = REPO / "src"
    with tempfile.TemporaryDirectory(prefix="same-output-") as tmp:
        scratch = Path(tmp)
        base_lines, base_digests = keep / "lines.jsonl", keep / "evidence.txt"
        base_src = None
        if not base_lines.is_file() or (args.evidence and not base_digests.is_file()):
            base_src = _export(commit, scratch / "base")
        if not base_lines.is_file():
            took = _run_cli(base_src, args.dev_set, scratch / "base.jsonl")
            (scratch / "base.jsonl").replace(base_lines)
            print(f"base {args.base or 'merge-base'} ({commit[:10]}): CLI run in {took:.0f} s, kept in {base_lines}")
        took = _run_cli(here_src, args.dev_set, scratch / "here.jsonl")
        print(f"this worktree: CLI run in {took:.0f} s")
        differ = _compare("JSON lines (ms removed)", _lines(base_lines), _lines(scratch / "here.jsonl"))
        if args.evidence:
            if not base_digests.is_file():
                _run_digests(base_src, args.dev_set, scratch / "base.txt")
                (scratch / "base.txt").replace(base_digests)
            _run_digests(here_src, args.dev_set, scratch / "here.txt")
            differ += _compare("evidence digests", _digests(base_digests), _digests(scratch / "here.txt"))
    print("same output" if not differ else "OUTPUT DIFFERS")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
