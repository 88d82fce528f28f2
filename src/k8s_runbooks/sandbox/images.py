"""Image registry of the sandbox: maps image references to local workload commands.

There is no container runtime: an "image" is a command line run as a local process. Unknown images
fail to pull (the kubelet reports ErrImagePull / ImagePullBackOff and never starts a process).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from k8s_runbooks.sandbox.workloads import pause


class ImageNotFound(Exception):
    """The image is not in the sandbox registry."""


def _split(image: str) -> tuple[str, str]:
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repo, tag


def resolve(image: str) -> list[str]:
    """Command line of the workload behind `image`; raises ImageNotFound for unknown images."""
    repo, _tag = _split(image.strip())
    if repo in ("sandbox/shop", "docker.io/sandbox/shop"):
        return [sys.executable, "-m", "k8s_runbooks.sandbox.workloads.shop"]
    if repo in ("sandbox/pause", "docker.io/sandbox/pause"):
        return list(pause.COMMAND)
    if is_project_image(image):
        return []  # the image's ENTRYPOINT is the CLI; flow-run Jobs give their own command (/usr/bin/env ...)
    if repo in ("sandbox/exec", "docker.io/sandbox/exec"):
        # Only usable with an explicit command/args in the container spec; the kubelet checks that.
        return []
    raise ImageNotFound(
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
        f"{image}: not found")


def image_id(image: str) -> str:
    """A stable digest-like imageID, as containerd reports (`<repo>@sha256:<digest>`)."""
    repo, _tag = _split(image.strip())
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{repo}@sha256:{digest}"


# --------------------------------------------------------------------------- the project's own image
# The Dockerfile's image under any registry (k8s-runbooks:dev on kind, REGION-docker.pkg.dev/PROJECT/k8s-runbooks/
# runbooks:0.1.0 in the base job template): in the sandbox it is this local install, run the way the image runs it.
_REPO_ROOT = Path(__file__).resolve().parents[3]


def is_project_image(image: str) -> bool:
    repo, _tag = _split(image.strip())
    return repo == "k8s-runbooks" or repo.endswith(("/k8s-runbooks", "/k8s-runbooks/runbooks"))


def workdir(image: str) -> str | None:
    """The image's WORKDIR (/app: the checkout) for the project image, else None (the kubelet's default)."""
    return str(_REPO_ROOT) if is_project_image(image) else None


def image_env(image: str, pod_dir: Path) -> dict[str, str]:
    """The image's ENV (Dockerfile), with its volumes' paths mapped into the pod's own directory."""
    if not is_project_image(image):
        return {}
    volumes = pod_dir / "volumes"
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(volumes / "prefect"), "MPLCONFIGDIR": str(volumes / "tmp" / "matplotlib"),
        "K8S_RUNBOOKS_STATE_DIR": str(volumes / "state"), "K8S_RUNBOOKS_REPORTS_DIR": str(volumes / "reports"),
        "K8S_RUNBOOKS_RECEIVER_SPOOL": str(volumes / "spool" / "alert-spool.sqlite3"),
        "K8S_RUNBOOKS_RECEIVER_ROUTES": str(_REPO_ROOT / "deployments" / "alert-routes.yaml"),
    }
