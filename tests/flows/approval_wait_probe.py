"""A flow run that pauses for the runbooks' approval form (flows.approval) and writes what it got back.

    python -m tests.flows.approval_wait_probe TIMEOUT_SECONDS OUT_DIR

Writes OUT_DIR/run_id as soon as it runs and OUT_DIR/outcome.json (the ApprovalOutcome) as soon as the wait
returns, before the flow run ends: a test can read the outcome while the Prefect API is still unreachable.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.approval import request_approval

FLOW_NAME = "approval-wait-probe"
ACTIONS = ["rollout_undo", "rollout_restart"]


@flow(name=FLOW_NAME)
def approval_wait_probe(timeout_seconds: int, out_dir: str) -> None:
    out = Path(out_dir)
    (out / "run_id").write_text(str(flow_run.id))
    outcome = request_approval("Probe: approve **rollout_undo** or **rollout_restart**.", ACTIONS, timeout_seconds)
    (out / "outcome.json").write_text(json.dumps(dataclasses.asdict(outcome)))


if __name__ == "__main__":
    approval_wait_probe(int(sys.argv[1]), sys.argv[2])
