"""The pinned Cloud-OpsBench cases (one dev case per root-cause label, `tests/fixtures/cloud-opsbench.tar.xz`,
rebuilt by `tests/fixtures/build_cloud_opsbench.py`), and how to run the product's CLI on them as a user would."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "cloud-opsbench.tar.xz"
TOP = "cloud-opsbench"
# sitecustomize.py that makes every socket connect/lookup raise and records the attempt (NO_NETWORK_LOG).
NO_NETWORK_DIR = Path(__file__).resolve().parent / "no_network"


@cache
def pinned_answers() -> dict[str, dict[str, str]]:
    """case path (relative to the unpacked root) -> metadata.json's answer, read from the archive."""
    answers = {}
    with tarfile.open(FIXTURE, "r:xz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/metadata.json"):
                data = tar.extractfile(member)
                assert data is not None
                rel = member.name[len(TOP) + 1:-len("/metadata.json")]
                answers[rel] = json.loads(data.read())["result"]
    return answers


def unpack(dest: Path) -> Path:
    """Unpack the pinned cases under `dest`; returns the root holding `<system>/<category>/<case>/`."""
    with tarfile.open(FIXTURE, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    return dest / TOP


def copy_case(root: Path, rel: str, dest: Path) -> Path:
    """A copy of one pinned case at `dest` (to damage it)."""
    shutil.copytree(root / rel, dest)
    return dest


def console_script() -> str:
    """The `k8s-runbooks` console script installed beside this interpreter (what a user runs)."""
    script = Path(sys.executable).parent / "k8s-runbooks"
    found = str(script) if script.exists() else shutil.which("k8s-runbooks")
    assert found, "the k8s-runbooks console script is not installed (pip install -e .)"
    return found


def no_network_env(log: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes cannot open a network connection (each attempt raises and is
    appended to `log`)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NO_NETWORK_DIR), env.get("PYTHONPATH", "")) if p)
    env["NO_NETWORK_LOG"] = str(log)
    return env
