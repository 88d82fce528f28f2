"""`k8s-runbooks` imports only the command being run: `diagnose` answers without loading the sandbox supervisor,
Prefect or the typed Kubernetes API classes (whose pydantic models cost about a CPU-second at import), while
`--help` still lists every command and each command still parses its own options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from k8s_runbooks_cli.main import COMMANDS

CLI = [sys.executable, "-X", "importtime", "-m", "k8s_runbooks_cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


def test_help_lists_every_command() -> None:
    done, _ = _run("--help")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in COMMANDS:
        assert f" {name} " in done.stdout, (name, done.stdout)


def test_live_diagnose_loads_neither_the_sandbox_nor_prefect_nor_typed_api_classes(tmp_path: Path) -> None:
    # A kubeconfig that is not there: the live path runs (collector, client, engine) up to the one-line error.
    env = {k: v for k, v in os.environ.items() if not k.startswith("K8S_RUNBOOKS_") and k != "KUBECONFIG"}
    env["K8S_RUNBOOKS_KUBECONFIG"] = str(tmp_path / "missing-kubeconfig")
    done, modules = _run("diagnose", "-n", "shop", "-s", "checkout", env=env)
    assert done.returncode == 1 and "cannot load Kubernetes configuration" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert {"k8s_runbooks_cli.diagnose", "k8s_runbooks.diagnosis.sources.live", "k8s_runbooks.kube.client"} <= modules
    heavy = {m for m in modules if m.startswith(("k8s_runbooks.sandbox", "prefect", "k8s_runbooks_cli.sandbox",
                                                 "kubernetes.client.api.core_v1_api", "kubernetes.client.api.apps_v1_api"))}
    assert not heavy, sorted(heavy)


def test_a_single_registered_command_still_parses_as_a_subcommand() -> None:
    done, _ = _run("diagnose", "--help")
    assert done.returncode == 0 and "--namespace" in done.stdout and " diagnose [OPTIONS]" in done.stdout, done.stdout
    done, _ = _run("sandbox", "--help")
    assert done.returncode == 0 and " sandbox [OPTIONS] COMMAND" in done.stdout, done.stdout
