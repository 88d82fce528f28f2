"""The sandbox's image registries: which image references exist, which need a pull secret, and what
containerd answers for the others.

There is no container runtime: an "image" is a command line run as a local process. The table:

| registry                  | reachable | pull secret                                 | repositories                         |
|---------------------------|-----------|---------------------------------------------|--------------------------------------|
| docker.io (the default)   | yes       | no                                          | sandbox/shop, sandbox/pause, sandbox/exec |
| registry.sandbox.local    | yes       | a kubernetes.io/dockerconfigjson secret in  | shop, pause, exec                    |
|                           |           | imagePullSecrets whose auths name the host  |                                      |
| any other host            | no (DNS)  |                                             |                                      |

A repository has the tags `latest` and versions (`1`, `2.3`, `v1.0.1`); any other tag is not found. Pulls fail
with containerd's messages: `rpc error: code = NotFound desc = failed to pull and unpack image ...: not found`
(unknown tag), `pull access denied, repository does not exist or may require authorization` (unknown Docker
Hub repository), `... 401 Unauthorized` (private registry without a pull secret), `dial tcp: lookup HOST on
127.0.0.53:53: no such host` (unknown registry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from k8s_runbooks.sandbox.workloads import pause

DEFAULT_REGISTRY = "docker.io"
PRIVATE_REGISTRY = "registry.sandbox.local"
_TAG = re.compile(r"^(latest|v?[0-9]+(\.[0-9]+)*)$")


class ImageNotFound(Exception):
    """The image cannot be pulled; the message is what containerd reports (after `Failed to pull image "x": `)."""


def _commands() -> dict[str, list[str]]:
    return {"shop": [sys.executable, "-m", "k8s_runbooks.sandbox.workloads.shop"], "pause": list(pause.COMMAND),
            "exec": []}  # exec: only usable with an explicit command/args (the kubelet checks that)


def parse_reference(image: str) -> tuple[str, str, str]:
    """(registry, repository, tag or digest) as containerd normalises a reference: `nginx` is
    `docker.io/library/nginx:latest`, `sandbox/shop:1` is `docker.io/sandbox/shop:1`."""
    image = image.strip()
    name, digest = (image.split("@", 1) + [""])[:2]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    repo, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = path, "latest"
    return registry, repo, f"@{digest}" if digest else tag


def canonical(image: str) -> str:
    registry, repo, tag = parse_reference(image)
    return f"{registry}/{repo}{tag if tag.startswith('@') else ':' + tag}"


def _auth_hosts(pull_secrets: list[dict[str, Any]]) -> set[str]:
    hosts: set[str] = set()
    for secret in pull_secrets:
        data = secret.get("data") or {}
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
        try:
            doc = json.loads(base64.b64decode(raw or "").decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            continue
        for host in (doc.get("auths") or doc):
            hosts.add(str(host).removeprefix("https://").removeprefix("http://").split("/")[0])
    return hosts


def pull(image: str, pull_secrets: list[dict[str, Any]] | None = None) -> list[str]:
    """The command line behind `image`, or ImageNotFound with containerd's message."""
    if is_project_image(image):
        return []  # this install; the image's ENTRYPOINT is the CLI, flow-run Jobs give their own command
    registry, repo, tag = parse_reference(image)
    ref = canonical(image)
    prefix = f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
    if registry not in (DEFAULT_REGISTRY, PRIVATE_REGISTRY):
        manifest = f"https://{registry}/v2/{repo}/manifests/{tag.lstrip('@')}"
        raise ImageNotFound(prefix + f'failed to do request: Head "{manifest}": dial tcp: lookup {registry} on '
                            "127.0.0.53:53: no such host")
    short = repo.removeprefix("sandbox/") if registry == DEFAULT_REGISTRY else repo
    known = (repo.startswith("sandbox/") or registry == PRIVATE_REGISTRY) and short in _commands()
    if registry == PRIVATE_REGISTRY and PRIVATE_REGISTRY not in _auth_hosts(pull_secrets or []):
        scope = quote(f"repository:{repo}:pull", safe="")
        raise ImageNotFound(prefix + "failed to authorize: failed to fetch anonymous token: unexpected status from GET "
                            f"request to https://{PRIVATE_REGISTRY}/token?scope={scope}&service={PRIVATE_REGISTRY}: "
                            "401 Unauthorized")
    if not known:
        if registry == DEFAULT_REGISTRY:
            raise ImageNotFound(prefix + "pull access denied, repository does not exist or may require authorization: "
                                "server message: insufficient_scope: authorization failed")
        raise ImageNotFound(f"rpc error: code = NotFound desc = {prefix}{ref}: not found")
    if not tag.startswith("@") and not _TAG.match(tag):
        raise ImageNotFound(f"rpc error: code = NotFound desc = {prefix}{ref}: not found")
    return list(_commands()[short])


def resolve(image: str) -> list[str]:
    """Command line of a public image (no pull secrets); raises ImageNotFound."""
    return pull(image)


def image_id(image: str) -> str:
    """A stable digest-like imageID, as containerd reports (`<registry>/<repo>@sha256:<digest>`)."""
    registry, repo, _tag = parse_reference(image)
    digest = hashlib.sha256(canonical(image).encode()).hexdigest()
    return f"{registry}/{repo}@sha256:{digest}"


# --------------------------------------------------------------------------- the project's own image
# The Dockerfile's image under any registry (k8s-runbooks:dev on kind, REGION-docker.pkg.dev/PROJECT/k8s-runbooks/
# runbooks:0.1.0 in the base job template): in the sandbox it is this local install, run the way the image runs it.
_REPO_ROOT = Path(__file__).resolve().parents[3]


def is_project_image(image: str) -> bool:
    _registry, repo, _tag = parse_reference(image)
    return repo.rsplit("/", 1)[-1] == "k8s-runbooks" or repo.endswith("k8s-runbooks/runbooks")


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
