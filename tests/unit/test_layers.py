"""The layers of docs/ARCHITECTURE.md hold: `lint-imports` keeps every contract of .importlinter, and those
contracts catch what they exist for (checked on a copy of the tree with one violation of each kind)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TREES = ("src", "flows", "tasks")


def lint_imports(root: Path, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with root's .importlinter; `pythonpath` first on sys.path, so a copied tree is the one analysed."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def report(result: subprocess.CompletedProcess[str]) -> str:
    """What lint-imports found, without its banner: the contracts, kept or broken, and why."""
    out = result.stdout
    return (out[out.index("Contracts\n"):] if "Contracts\n" in out else out) + result.stderr


def test_every_layer_contract_is_kept() -> None:
    result = lint_imports(REPO, [REPO / "src", REPO])  # this checkout, whichever one the venv has installed
    assert result.returncode == 0, f"an import breaks the layers (docs/ARCHITECTURE.md):\n{report(result)}"
    assert "0 broken" in result.stdout, report(result)


def _append(path: Path, code: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write("\n\n" + code)


def test_contracts_catch_lazy_imports_new_packages_and_cycles(tmp_path: Path) -> None:
    for tree in TREES:
        shutil.copytree(REPO / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    src = tmp_path / "src"
    # One violation per contract, each an import inside a function (lazy imports count).
    _append(src / "k8s_runbooks" / "guard.py", "def _probe():\n    import prefect\n")
    _append(src / "k8s_runbooks" / "newpart" / "__init__.py", "def _probe():\n    from k8s_runbooks.sandbox import supervisor\n")
    _append(tmp_path / "flows" / "common.py", "def _probe():\n    from k8s_runbooks.sandbox import supervisor\n")
    _append(src / "k8s_runbooks_prefect" / "deploy.py", "def _probe():\n    import flows.pod_crash\n")
    _append(src / "k8s_runbooks" / "drills" / "model.py", "def _probe():\n    from k8s_runbooks.drills import report\n")

    result = lint_imports(tmp_path, [src, tmp_path])
    text = " ".join(report(result).split())  # lint-imports wraps long lines
    assert result.returncode == 1, text
    assert "4 broken" in text, text
    for expected in (
        "The core (k8s_runbooks but its sandbox) never imports prefect, flows, tasks or the sandbox BROKEN",
        "k8s_runbooks.guard -> prefect",
        "k8s_runbooks.newpart -> k8s_runbooks.sandbox.supervisor",
        "Flows, tasks and the Prefect adapters never import the sandbox BROKEN",
        "flows.common -> k8s_runbooks.sandbox.supervisor",
        "Layers: cli > flows > tasks > Prefect adapters > core (no import upward) BROKEN",
        "k8s_runbooks_prefect.deploy -> flows.pod_crash",
        "No import cycles between the sibling modules and packages of any package BROKEN",
        "No cycles are allowed in k8s_runbooks.drills",
    ):
        assert expected in text, f"{expected!r} not reported:\n{text}"
