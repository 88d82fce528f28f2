"""The one client seam: build the official `ApiClient` from settings, call it with timeouts, map errors.

Every request goes through `Kube.call`, which sets `_request_timeout=(connect, read)` and maps
`ApiException` / urllib3 / socket errors to `k8s_runbooks.errors`. urllib3's own retries are disabled:
retrying is the job of the Prefect task policy (`tasks/_retry.py`), so a retry is visible in the run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from k8s_runbooks.errors import (
    ConfigError,
    Forbidden,
    InvalidInput,
    NotFound,
    PermanentError,
    RunbookError,
    TransientError,
)
from k8s_runbooks.settings import Settings, get_settings

T = TypeVar("T")


@dataclass(frozen=True)
class Op:
    """What a request does, for error messages: `get deployments shop/checkout`."""

    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None

    def target(self) -> str:
        if self.namespace and self.name:
            return f"{self.namespace}/{self.name}"
        return self.name or (f"namespace {self.namespace}" if self.namespace else "cluster scope")

    def __str__(self) -> str:
        return f"{self.verb} {self.resource} {self.target()}"


def _status_message(body: str | None) -> str:
    """The `message` of a Kubernetes Status body, or the raw body (shortened)."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return body.strip()[:300]


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def map_error(exc: ApiException | urllib3.exceptions.HTTPError | OSError, op: Op) -> RunbookError:
    """Map a client failure to the error hierarchy with a message that says what to do next."""
    if not isinstance(exc, ApiException):
        # Timeouts, refused/reset connections, DNS failures: the API server may come back.
        return TransientError(
            f"Kubernetes API unreachable during '{op}': {type(exc).__name__}: {exc}",
            hint="check that the API server is up and the kubeconfig server address is right",
        )
    status = int(exc.status or 0)
    message = _status_message(exc.body) or (exc.reason or "")
    if status == 429:
        return TransientError(
            f"Kubernetes API rate limited '{op}' (HTTP 429): {message}", retry_after=_retry_after(exc.headers)
        )
    if status >= 500 or status in (0, 408):
        return TransientError(
            f"Kubernetes API failed '{op}' (HTTP {status}): {message}", retry_after=_retry_after(exc.headers)
        )
    if status in (401, 403):
        ns = f" in namespace {op.namespace}" if op.namespace else ""
        return Forbidden(
            f"Kubernetes API denied '{op}' (HTTP {status}): {message}",
            hint=f"grant the runbook's identity '{op.verb}' on '{op.resource}'{ns} (Role/RoleBinding), "
            "or check the kubeconfig credentials",
        )
    if status == 404:
        return NotFound(
            f"{op.resource} {op.target()} not found (HTTP 404) during '{op.verb}'",
            hint="check the namespace and the name (kubectl get -n NAMESPACE ...)",
        )
    if status == 409:
        return TransientError(f"conflict during '{op}' (HTTP 409): {message}", hint="the object changed; retry reads it again")
    if status in (400, 422):
        return InvalidInput(f"Kubernetes API rejected '{op}' (HTTP {status}): {message}")
    return PermanentError(f"Kubernetes API refused '{op}' (HTTP {status}): {message}")


class Kube:
    """The official client with our timeout and error policy. Create with `get_kube(settings)`."""

    def __init__(self, api_client: k8s.ApiClient, timeout_seconds: float) -> None:
        self.api_client = api_client
        # (connect, read): connecting should be quick, the read may carry a big list or log.
        self.timeout: tuple[float, float] = (min(timeout_seconds, 5.0), timeout_seconds)
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)

    def call(self, op: Op, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise map_error(exc, op) from exc

    def close(self) -> None:
        self.api_client.close()


def _kubeconfig_path(settings: Settings) -> Path | None:
    if settings.kubeconfig:
        return Path(settings.kubeconfig).expanduser()
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and Path(part).expanduser().is_file():
                return Path(part).expanduser()
    default = Path("~/.kube/config").expanduser()
    return default if default.is_file() else None


def build_api_client(settings: Settings) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    path = _kubeconfig_path(settings)
    try:
        if path is not None:
            k8s_config.load_kube_config(
                config_file=str(path), context=settings.kube_context, client_configuration=cfg, persist_config=False
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            raise ConfigError(
                "no Kubernetes configuration found",
                hint="set K8S_RUNBOOKS_KUBECONFIG or $KUBECONFIG, create ~/.kube/config, or run in a cluster",
            )
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load Kubernetes configuration from {path or 'in-cluster'}: {exc}",
            hint="check the kubeconfig file and K8S_RUNBOOKS_KUBE_CONTEXT",
        ) from exc
    cfg.retries = False  # no hidden urllib3 retries: the task policy retries, visibly
    return k8s.ApiClient(cfg)


_cache: dict[tuple[str | None, str | None, float], Kube] = {}
_cache_lock = threading.Lock()


def get_kube(settings: Settings | None = None) -> Kube:
    """A shared `Kube` per (kubeconfig, context, timeout); building one parses the kubeconfig."""
    settings = settings or get_settings()
    path = _kubeconfig_path(settings)
    key = (str(path) if path else None, settings.kube_context, settings.kube_timeout_seconds)
    with _cache_lock:
        kube = _cache.get(key)
        if kube is None:
            kube = Kube(build_api_client(settings), settings.kube_timeout_seconds)
            _cache[key] = kube
        return kube


def reset_clients() -> None:
    """Forget cached clients (tests that switch clusters, or after a kubeconfig change)."""
    with _cache_lock:
        for kube in _cache.values():
            kube.close()
        _cache.clear()
