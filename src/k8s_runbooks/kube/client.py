"""The one client seam: build the official `ApiClient` from settings, call it with timeouts, map errors.

Every request goes through `Kube.call`, which sets `_request_timeout=(connect, read)` and maps
`ApiException` / urllib3 / socket errors to `k8s_runbooks.errors`. urllib3's own retries are disabled.
Reads (get/list) that fail transiently are retried here a couple of times with a short backoff (honouring
Retry-After, capped): a task makes several reads, and with task-level retries alone a flaky API server fails
nearly every attempt of a task with many reads. Each such retry is logged (logger `k8s_runbooks.kube`).
Writes are never retried here: that is the job of the Prefect task policy (`tasks/_retry.py`), visible in
the run, and writes that must not be repeated blindly check their own outcome first (kube/workloads.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
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
log = logging.getLogger("k8s_runbooks.kube")

READ_VERBS = frozenset({"get", "list"})
READ_RETRIES = 2  # extra attempts of a read inside one call
READ_BACKOFF_SECONDS = 0.5  # 0.5 s, 1 s
MAX_READ_RETRY_AFTER_SECONDS = 5.0


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
        self.read_retries = 0  # reads retried inside `call` (for tests and diagnostics)

    # Built on first use: importing an API class builds its pydantic models (CoreV1Api ~0.8 CPU-seconds), which a
    # caller that only uses `get_raw` (the live diagnosis, `k8s-runbooks diagnose`) never needs.
    @cached_property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    @cached_property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api_client)

    @cached_property
    def coordination(self) -> k8s.CoordinationV1Api:
        return k8s.CoordinationV1Api(self.api_client)

    def call(self, op: Op, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.timeout)
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                err = map_error(exc, op)
                if not (err.transient and op.verb in READ_VERBS and attempt < READ_RETRIES):
                    raise err from exc
            attempt += 1
            self.read_retries += 1
            retry_after = getattr(err, "retry_after", None)
            delay = min(retry_after, MAX_READ_RETRY_AFTER_SECONDS) if retry_after else READ_BACKOFF_SECONDS * attempt
            log.warning("retrying '%s' in %.1fs (attempt %d of %d): %s", op, delay, attempt + 1, READ_RETRIES + 1, err.message)
            time.sleep(delay)

    def get_raw(self, op: Op, path: str, path_params: dict[str, str] | None = None,
                query: dict[str, Any] | None = None, accept: str = "application/json") -> bytes:
        """GET `path` (e.g. `/api/v1/namespaces/{namespace}/pods`) and return the body as sent, with the same
        timeout, error mapping and read retries as `call`. For reads used as plain JSON or text (evidence, logs):
        it skips the typed API classes, whose first use builds hundreds of pydantic models and validators
        (~1 CPU-second for CoreV1Api in a fresh process), and the model round trip of every item."""

        def get(_request_timeout: Any) -> bytes:
            api = self.api_client
            params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items() if v is not None]
            method, url, headers, _body, _post = api.param_serialize(
                "GET", path, path_params=path_params, query_params=params or None, header_params={"Accept": accept},
                auth_settings=["BearerToken"])
            resp = api.call_api(method, url, header_params=headers, _request_timeout=_request_timeout)
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
            return bytes(resp.data or b"")

        return self.call(op, get)

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


def _contexts_hint(path: Path) -> str:
    try:
        contexts, _ = k8s_config.list_kube_config_contexts(config_file=str(path))
    except (ConfigException, OSError, ValueError):
        return "check the kubeconfig file and K8S_RUNBOOKS_KUBE_CONTEXT"
    return f"contexts in {path}: {', '.join(sorted(c['name'] for c in contexts)) or 'none'}"


def build_api_client(settings: Settings, context: str | None = None) -> k8s.ApiClient:
    """`context` (a run's kube_context) overrides `settings.kube_context`; both None: the current context."""
    context = context or settings.kube_context
    cfg = k8s.Configuration()
    path = _kubeconfig_path(settings)
    try:
        if path is not None:
            k8s_config.load_kube_config(
                config_file=str(path), context=context, client_configuration=cfg, persist_config=False
            )
        elif context:
            raise ConfigError(
                f"kube context {context!r} requested but no kubeconfig found",
                hint="set K8S_RUNBOOKS_KUBECONFIG or $KUBECONFIG to a kubeconfig that has this context",
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            raise ConfigError(
                "no Kubernetes configuration found",
                hint="set K8S_RUNBOOKS_KUBECONFIG or $KUBECONFIG, create ~/.kube/config, or run in a cluster",
            )
    except (ConfigException, OSError, ValueError) as exc:
        where = f"{path}" + (f" (context {context!r})" if context else "") if path else "in-cluster"
        raise ConfigError(
            f"cannot load Kubernetes configuration from {where}: {exc}",
            hint=_contexts_hint(path) if path is not None else "check the kubeconfig file and K8S_RUNBOOKS_KUBE_CONTEXT",
        ) from exc
    cfg.retries = False  # no hidden urllib3 retries: the task policy retries, visibly
    return k8s.ApiClient(cfg)


# The kube context of the runbook run in progress (its `kube_context` parameter). A ContextVar, so it follows
# the flow into its tasks (Prefect runs tasks in the flow's thread or in a copy of its context) without
# threading a parameter through every task and core function.
_run_context: ContextVar[str | None] = ContextVar("k8s_runbooks_kube_context", default=None)


@contextmanager
def kube_context(name: str | None) -> Iterator[None]:
    """Within the block, `get_kube()` talks to kubeconfig context `name`; None keeps the settings' context."""
    if not name:
        yield
        return
    token = _run_context.set(name)
    try:
        yield
    finally:
        _run_context.reset(token)


def current_context(settings: Settings) -> str | None:
    """The context `get_kube(settings)` uses now: the run's, else the settings', else None (kubeconfig's current)."""
    return _run_context.get() or settings.kube_context


_cache: dict[tuple[str | None, str | None, float], Kube] = {}
_cache_lock = threading.Lock()


def get_kube(settings: Settings | None = None) -> Kube:
    """A shared `Kube` per (kubeconfig, context, timeout); building one parses the kubeconfig."""
    settings = settings or get_settings()
    path = _kubeconfig_path(settings)
    context = current_context(settings)
    key = (str(path) if path else None, context, settings.kube_timeout_seconds)
    with _cache_lock:
        kube = _cache.get(key)
        if kube is None:
            kube = Kube(build_api_client(settings, context), settings.kube_timeout_seconds)
            _cache[key] = kube
        return kube


def reset_clients() -> None:
    """Forget cached clients (tests that switch clusters, or after a kubeconfig change)."""
    with _cache_lock:
        for kube in _cache.values():
            kube.close()
        _cache.clear()
