"""The receiver's Prefect adapter for approvals: read a paused run, resume it with its typed form, and attach
records of presses to it. The only module of chatops/ that imports prefect (lazily, like the dispatcher),
so moving the receiver's Prefect access out of the core moves this file as a whole.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from k8s_runbooks.chatops.desk import RunView


class PrefectRunControl:
    """RunControl over the Prefect client (PREFECT_API_URL / PREFECT_API_AUTH_STRING; its 429/5xx retries)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def _client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True, httpx_settings={"timeout": self.timeout})

    def read(self, run_id: str) -> RunView | None:
        from prefect.exceptions import ObjectNotFound

        try:
            uid = UUID(run_id)
        except ValueError:
            return None
        with self._client() as client:
            try:
                run = client.read_flow_run(uid)
            except ObjectNotFound:
                return None
        state = run.state
        details = state.state_details if state is not None else None
        params = run.parameters.get("params") if isinstance(run.parameters, dict) else None
        namespace = str(params.get("namespace", "")) if isinstance(params, dict) else ""
        route = next((t.split(":", 1)[1] for t in run.tags if t.startswith("alert-route:")), None)
        expires = details.pause_timeout.timestamp() if details is not None and details.pause_timeout else None
        return RunView(id=run_id, state=state.type.value if state is not None else "UNKNOWN",
                       pause_key=details.pause_key if details is not None else None, pause_expires=expires,
                       namespace=namespace, route=route, has_form=bool(details and details.run_input_keyset))

    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[bool, str]:
        with self._client() as client:
            result = client.resume_flow_run(UUID(run_id), run_input=run_input)
        status = getattr(result.status, "value", str(result.status))
        reason = getattr(result.details, "reason", "") or ""
        return status == "ACCEPT", f"{status}: {reason}" if reason else status

    def record(self, run_id: str, key: str, value: dict[str, Any]) -> None:
        with self._client() as client:
            client.create_flow_run_input(UUID(run_id), key=key, value=json.dumps(value), sender="k8s-runbooks-receiver")
