"""Run the pod-crash flow in its own process (as the CLI does) and print one JSON line with the outcome."""

from __future__ import annotations

import json
import sys

from flows.params import PodCrashParams
from flows.pod_crash import run_pod_crash


def main() -> None:
    params = PodCrashParams.model_validate_json(sys.argv[1])
    flow_run_id, state, path = run_pod_crash(params)
    print(json.dumps({"flow_run_id": flow_run_id, "state": state.type.value, "name": state.name,
                      "message": state.message, "postmortem": str(path) if path else None}), flush=True)


if __name__ == "__main__":
    main()
