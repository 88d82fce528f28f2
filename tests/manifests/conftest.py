"""Build the kustomize overlays once per session with the real kubectl (offline: kustomize is built in)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
K8S = REPO / "deployments" / "k8s"
# What a platform team applies; "gke+prefect-server" is the GKE overlay with the self-hosted server added,
# as deployments/README.md tells self-hosted users to do.
BUILDS = ["base", "kind", "gke", "gke+prefect-server"]


def kustomize(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed ({proc.returncode}):\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _build_dir(name: str, tmp: Path) -> Path:
    if name == "base":
        return K8S / "base"
    if name == "gke+prefect-server":
        # The GKE overlay as README tells self-hosted users to edit it: plus `components: [../../prefect-server]`.
        # Directories (not files) outside a kustomization's root may be referenced by relative path.
        k = yaml.safe_load((K8S / "overlays" / "gke" / "kustomization.yaml").read_text())
        k["resources"] = [os.path.relpath(K8S / "base", tmp)]
        k["components"] = [os.path.relpath(K8S / "prefect-server", tmp)]
        (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
        return tmp
    return K8S / "overlays" / name


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[dict[str, Any]]]]:
    yield {name: kustomize(_build_dir(name, tmp_path_factory.mktemp("overlay"))) for name in BUILDS}


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_templates(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(`Kind/name`, pod template) of every workload in the build."""
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]) for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
