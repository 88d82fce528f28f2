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


# Longer than any round can take: the probe starts with the round and waits while the browser gets there.
# With 300 s, a round at load ~31 on 2 cores (487 s to reach the dialog) found the run already Failed
# ("never resumed") and the dialog without its form. The scenario kills the probe when the round ends.
APPROVAL_TIMEOUT_SECONDS = 3600


@flow(name=FLOW_NAME)
def approval_probe(tag: str) -> dict[str, object]:
    answer = request_approval(f"UI test {tag}: approve **rollout_undo** to continue.", ["rollout_undo", "delete_pods"],
                              APPROVAL_TIMEOUT_SECONDS)
    return dataclasses.asdict(answer)


if __name__ == "__main__":
    print(json.dumps(approval_probe(sys.argv[1])), flush=True)
