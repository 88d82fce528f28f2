"""Prometheus, Alertmanager and Pushgateway binaries, extracted from Debian packages.

No registry ships these as Python wheels, so we `apt-get download` the Debian packages and `dpkg-deb -x`
them (lighter than a system install: no UI assets, no services). Binaries already on PATH are accepted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from k8s_runbooks.errors import PermanentError


class SandboxError(PermanentError):
    """The sandbox could not be set up or driven (missing tool, port taken, component unhealthy)."""


TOOLS_DIR_ENV = "K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"

# our name -> (Debian package, names the binary may have in usr/bin or on PATH)
BINARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "prometheus": ("prometheus", ("prometheus",)),
    "promtool": ("prometheus", ("promtool",)),
    "alertmanager": ("prometheus-alertmanager", ("prometheus-alertmanager", "alertmanager")),
    "amtool": ("prometheus-alertmanager", ("amtool",)),
    "pushgateway": ("prometheus-pushgateway", ("prometheus-pushgateway", "pushgateway")),
}

APT_TIMEOUT_S = 600
# Debian's Alertmanager reads its notification templates from this fixed path (a Debian patch; no flag).
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager")
TEMPLATE_CACHE = ".alertmanager-templates"  # inside the tools dir, so the path can be refilled offline


def tools_dir(state_dir: Path) -> Path:
    """Where binaries live: `$K8S_RUNBOOKS_SANDBOX_TOOLS_DIR` (a cache shared across state dirs) or `<state>/tools/bin`."""
    shared = os.environ.get(TOOLS_DIR_ENV)
    return Path(shared).expanduser().resolve() if shared else (Path(state_dir) / "tools" / "bin").resolve()


def find_binary(name: str, directory: Path) -> Path | None:
    local = directory / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    for candidate in BINARIES[name][1]:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    return None


def ensure_binaries(state_dir: Path, names: tuple[str, ...] = tuple(BINARIES)) -> dict[str, Path]:
    """Return {name: path} for every binary, downloading and extracting the packages that are missing."""
    directory = tools_dir(state_dir)
    found = {name: find_binary(name, directory) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        packages = sorted({BINARIES[name][0] for name in missing})
        _install_packages(packages, directory)
        for name in missing:
            path = find_binary(name, directory)
            if path is None:
                raise SandboxError(f"{name} not found in the extracted Debian packages {', '.join(packages)} (looked in {directory})")
            found[name] = path
    if "alertmanager" in names:
        _ensure_alertmanager_templates(directory)
    return {name: path for name, path in found.items() if path is not None}


def _ensure_alertmanager_templates(directory: Path) -> None:
    if (ALERTMANAGER_TEMPLATES / "default.tmpl").is_file():
        return
    cache = directory / TEMPLATE_CACHE
    if not (cache / "default.tmpl").is_file():
        _install_packages(["prometheus-alertmanager"], directory)
    try:
        ALERTMANAGER_TEMPLATES.mkdir(parents=True, exist_ok=True)
        for tmpl in cache.glob("*.tmpl"):
            shutil.copy2(tmpl, ALERTMANAGER_TEMPLATES / tmpl.name)
    except OSError as exc:
        raise SandboxError(
            f"Alertmanager needs its templates in {ALERTMANAGER_TEMPLATES} and they could not be copied there ({exc})",
            hint="run `k8s-runbooks sandbox tools` once as root, or `apt-get install prometheus-alertmanager`",
        ) from exc


def _install_packages(packages: list[str], directory: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SandboxError(
            f"need the Debian packages {', '.join(packages)} but apt-get/dpkg-deb are not available; "
            f"install prometheus, alertmanager and pushgateway on PATH or put them in {directory}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k8s-runbooks-debs-") as tmp:
        debs = _download(packages, Path(tmp))
        for deb in debs:
            root = Path(tmp) / f"x-{deb.stem}"
            _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
            for binary in (root / "usr" / "bin").iterdir():
                target = directory / binary.name
                # Copy under a temporary name, then rename: a concurrent reader never sees half a binary.
                partial = directory / f".{binary.name}.partial-{os.getpid()}"
                shutil.copy2(binary, partial)
                os.replace(partial, target)
                for alias, (_, names) in BINARIES.items():
                    if binary.name in names and alias != binary.name and not (directory / alias).exists():
                        (directory / alias).symlink_to(binary.name)
            templates = root / "usr" / "share" / "prometheus" / "alertmanager"
            if templates.is_dir():
                (directory / TEMPLATE_CACHE).mkdir(exist_ok=True)
                for tmpl in templates.glob("*.tmpl"):
                    shutil.copy2(tmpl, directory / TEMPLATE_CACHE / tmpl.name)


def _download(packages: list[str], into: Path) -> list[Path]:
    result = _run(["apt-get", "download", *packages], "apt-get download", cwd=into, check=False)
    if result.returncode != 0:
        if "Unable to locate package" in result.stderr or "Can't select" in result.stderr:
            _run(["apt-get", "update"], "apt-get update")
            result = _run(["apt-get", "download", *packages], "apt-get download", cwd=into, check=False)
        if result.returncode != 0:
            raise SandboxError(f"apt-get download {' '.join(packages)} failed: {_last_line(result.stderr)}")
    debs = sorted(into.glob("*.deb"))
    if not debs:
        raise SandboxError(f"apt-get download {' '.join(packages)} produced no .deb file")
    return debs


def _run(cmd: list[str], what: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what} timed out after {APT_TIMEOUT_S}s") from exc
    except OSError as exc:
        raise SandboxError(f"{what} could not run: {exc}") from exc
    if check and result.returncode != 0:
        raise SandboxError(f"{what} failed: {_last_line(result.stderr)}")
    return result


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
