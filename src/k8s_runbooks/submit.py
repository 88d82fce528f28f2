"""Submit a runbook run to its registered deployment and follow it: Prefect's REST API over httpx, no Prefect import.

What `k8s-runbooks run ... --submit` does. The run is created exactly as the alert receiver creates it, so the
workers (the sandbox's warm runner: a pre-started process with Prefect, the flows and the Kubernetes client
already imported) start it within a second; the CLI process itself stays small and starts in ~0.5 s, where
running the flow in-process first spends ~2 s importing Prefect and the clients.

Every request has a timeout; connection errors, timeouts and 5xx/429 are retried with backoff, 404/422 fail at
once with what to do.
"""

from __future__ import annotations

import base64
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from k8s_runbooks.errors import ConfigError, InvalidInput, NotFound, RunbookError, TransientError, from_http_status

FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
REQUEST_TIMEOUT_S = 10.0
RETRY_ATTEMPTS = 5


@dataclass
class RunView:
    """What the CLI shows of a flow run."""

    id: str
    name: str
    state_type: str
    state_name: str
    message: str

    @property
    def final(self) -> bool:
        return self.state_type in FINAL_STATES

    @classmethod
    def of(cls, data: dict[str, Any]) -> "RunView":
        state = data.get("state") or {}
        return cls(str(data["id"]), data.get("name") or "", state.get("type") or "SCHEDULED",
                   state.get("name") or "Scheduled", state.get("message") or "")


def _auth_headers() -> dict[str, str]:
    """Prefect Cloud's API key, or a self-hosted server's basic-auth string, as the Prefect client sends them."""
    if key := os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {key}"}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    return {}


@dataclass
class PrefectRest:
    api_url: str
    timeout: float = REQUEST_TIMEOUT_S
    attempts: int = RETRY_ATTEMPTS
    backoff_s: float = 0.5
    on_retry: Callable[[str], None] | None = None  # told of each retry (the CLI prints it: progress, not silence)
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(f"PREFECT_API_URL {self.api_url!r} is not an http(s) URL",
                              hint='e.g. http://127.0.0.1:4200/api, or eval "$(k8s-runbooks sandbox env)"')
        self._client = httpx.Client(base_url=self.api_url.rstrip("/"), timeout=self.timeout, headers=_auth_headers())

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                err: RunbookError = TransientError(f"{what}: the Prefect API at {self.api_url} did not answer ({type(exc).__name__})",
                                                   hint="is the server up? `k8s-runbooks sandbox status`, or check PREFECT_API_URL")
            else:
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                retry_after = resp.headers.get("Retry-After")
                err = from_http_status(resp.status_code, what, resp.text,
                                       float(retry_after) if retry_after and retry_after.isdigit() else None)
            if not err.transient or attempt == self.attempts:
                raise err
            delay = max(min(8.0, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2),
                        getattr(err, "retry_after", None) or 0)
            if self.on_retry is not None:
                self.on_retry(f"{err.message}; retry {attempt}/{self.attempts - 1} in {delay:.1f}s")
            time.sleep(delay)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------------ runs
    def deployment_id(self, name: str) -> str:
        flow_name, _, dep_name = name.partition("/")
        try:
            return str(self.request("GET", f"/deployments/name/{flow_name}/{dep_name}", f"deployment {name}")["id"])
        except NotFound:
            raise NotFound(f"deployment {name!r} is not registered on the Prefect server at {self.api_url}",
                           hint="register the deployments (`k8s-runbooks sandbox up`, or `prefect deploy --all`), "
                                "or run the runbook in this process without --submit") from None

    def create_run(self, deployment: str, parameters: dict[str, Any], tags: list[str]) -> RunView:
        dep_id = self.deployment_id(deployment)
        try:
            # One key for every attempt: a retry after a lost answer returns the run already created, not a second one.
            data = self.request("POST", f"/deployments/{dep_id}/create_flow_run", f"create a run of {deployment}",
                                json={"parameters": parameters, "tags": tags, "idempotency_key": f"cli-{uuid.uuid4()}"})
        except InvalidInput as exc:  # the deployment enforces its parameter schema
            raise InvalidInput(f"the server refused the parameters of {deployment}: {exc.message}",
                               hint="the registered deployment may be older than this CLI: re-register it") from None
        return RunView.of(data)

    def read_run(self, run_id: str) -> RunView:
        return RunView.of(self.request("GET", f"/flow_runs/{run_id}", f"flow run {run_id}"))

    def logs_after(self, run_id: str, after: str | None, limit: int = 200) -> list[dict[str, Any]]:
        flt: dict[str, Any] = {"flow_run_id": {"any_": [run_id]}}
        if after:
            flt["timestamp"] = {"after_": after}
        body = {"logs": flt, "sort": "TIMESTAMP_ASC", "limit": limit}
        return list(self.request("POST", "/logs/filter", f"logs of flow run {run_id}", json=body) or [])


def follow(rest: PrefectRest, run_id: str, *, on_state: Callable[[RunView], None],
           on_log: Callable[[dict[str, Any]], None], poll_s: float = 0.5, timeout_s: float | None = None,
           log_grace_s: float = 6.0) -> RunView:
    """Poll the run until it is final, reporting each new state (but the final one: that is the caller's) and each
    new log line once; returns the final view. A run that outlives `timeout_s` is left running (it belongs to the
    workers) and reported as such."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen_state: tuple[str, str] | None = None
    last_ts: str | None = None
    seen_logs: set[str] = set()

    def new_logs() -> bool:
        nonlocal last_ts
        finished = False
        for line in rest.logs_after(run_id, last_ts):
            key = str(line.get("id") or (line.get("timestamp"), line.get("message")))
            if key in seen_logs:
                continue
            seen_logs.add(key)
            on_log(line)
            last_ts = line.get("timestamp") or last_ts
            finished = finished or (line.get("name") == "prefect.flow_runs" and line.get("task_run_id") is None
                                    and str(line.get("message", "")).startswith("Finished in state"))
        return finished

    while True:
        view = rest.read_run(run_id)
        finished = new_logs()
        if view.final:
            # The worker ships its log lines in batches (every ~2 s) and the last ones after the final state:
            # read on until the engine's closing line ("Finished in state ...") or a few seconds.
            grace = time.monotonic() + log_grace_s
            while not finished and time.monotonic() < grace:
                time.sleep(min(poll_s, 0.3))
                finished = new_logs()
            return view
        if (view.state_type, view.state_name) != seen_state:
            seen_state = (view.state_type, view.state_name)
            on_state(view)
        if deadline is not None and time.monotonic() > deadline:
            raise TransientError(f"flow run {run_id} is still {view.state_name} after {timeout_s:.0f}s; it goes on",
                                 hint=f"follow it in the UI, or rebuild its post-mortem later: k8s-runbooks postmortem {run_id}")
        time.sleep(poll_s)


def log_time(line: dict[str, Any]) -> str:
    ts = line.get("timestamp") or ""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%H:%M:%S")
    except ValueError:
        return ts[:8]
