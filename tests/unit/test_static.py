"""Names a flow uses are defined: ruff's pyflakes rules over the product, the sandbox, the tests and the benches.
An undefined name (a renamed variable left behind) fails only when its line runs: in a flow, that is mid-incident
(one did: check-metrics died on a stale name while building the impact line)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert found, "ruff is missing from the venv: pip install -e '.[test]'"
    return found


def test_pyflakes_rules_pass() -> None:
    proc = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", "flows", "tasks", "src", "tests", "bench"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_finds_an_undefined_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def impact(slow):\n    return len(d.slow)\n")
    proc = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "F821" in proc.stdout, proc.stdout
