"""A flow run that pauses for the runbooks' approval form (flows.approval) and prints the answer as JSON.

Run as `python -m tests.ui.approval_probe TAG` with PREFECT_API_URL set; the UI test resumes it in the browser.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from prefect import flow

from flows.approval import request_approval

FLOW_NAME = "ui-approval-probe"


@flow(name=FLOW_NAME)
def approval_probe(tag: str) -> dict[str, object]:
    answer = request_approval(f"UI test {tag}: approve **rollout_undo** to continue.", ["rollout_undo", "delete_pods"], 300)
    return dataclasses.asdict(answer)


if __name__ == "__main__":
    print(json.dumps(approval_probe(sys.argv[1])), flush=True)
