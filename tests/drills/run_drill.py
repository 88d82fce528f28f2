"""Run a drill flow in its own process (as the CLI does) and print one JSON line: run id, state, scorecard."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys

from flows.drills import drill_latency, drill_pod_crash, scorecard_of
from k8s_runbooks.drills.model import DrillParams


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that gives up on us asks where we hang
    if os.environ.get("RUN_DRILL_SIGINT") == "ignore":  # as in a process a script started with `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    scenario, params = sys.argv[1], DrillParams.model_validate_json(sys.argv[2])
    fn = drill_pod_crash if scenario == "pod-crash" else drill_latency
    state = fn(params, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    card = scorecard_of(run_id)
    print(json.dumps({"flow_run_id": run_id, "state": state.type.value, "message": state.message,
                      "scorecard": json.loads(card.model_dump_json()) if card else None}), flush=True)


if __name__ == "__main__":
    main()
