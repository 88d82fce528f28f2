"""Image registry of the sandbox: maps image references to local workload commands.

There is no container runtime: an "image" is a command line run as a local process. Unknown images
fail to pull (the kubelet reports ErrImagePull / ImagePullBackOff and never starts a process).
"""

from __future__ import annotations

import hashlib
import sys

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
