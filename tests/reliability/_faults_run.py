"""Run one runbook in its own process, as the CLI does, and print one JSON line with its outcome.

    python -m tests.reliability._faults_run pod-crash|high-latency|incident|drill-pod-crash|drill-latency JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect.states import State


def _run(kind: str, raw: str) -> tuple[str, State, Path | None]:
    if kind == "pod-crash":
        from flows.params import PodCrashParams
        from flows.pod_crash import run_pod_crash

        return run_pod_crash(PodCrashParams.model_validate_json(raw))
    if kind == "high-latency":
        from flows.high_latency import run_high_latency
        from flows.params import HighLatencyParams

        return run_high_latency(HighLatencyParams.model_validate_json(raw))
    if kind == "incident":
        from flows.incident_response import run_incident
        from flows.params import IncidentParams

        return run_incident(IncidentParams.model_validate_json(raw))
    if kind in ("drill-pod-crash", "drill-latency"):
        from flows.drills import drill_latency, drill_pod_crash
        from k8s_runbooks.drills.model import DrillParams

        fn = drill_pod_crash if kind == "drill-pod-crash" else drill_latency
        state = fn(DrillParams.model_validate_json(raw), return_state=True)
        return str(state.state_details.flow_run_id), state, None
    raise SystemExit(f"unknown runbook kind {kind!r}")


def main() -> None:
    flow_run_id, state, path = _run(sys.argv[1], sys.argv[2])
    print(json.dumps({"flow_run_id": flow_run_id, "state": state.type.value, "name": state.name,
                      "message": state.message, "postmortem": str(path) if path else None}), flush=True)


if __name__ == "__main__":
    main()
