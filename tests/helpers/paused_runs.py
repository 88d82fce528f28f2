"""PausedRuns: the approval desk's RunControl with Prefect's resume rules, in memory (only a paused run resumes,
not after its pause timeout; the answer is kept as the run's input; press records are kept in order). For the
desk's own tests and fuzzing; tests/chatops/test_slack_e2e.py uses the real Prefect adapter."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from k8s_runbooks.chatops.desk import RunView


@dataclass
class PausedRuns:
    runs: dict[str, RunView] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def read(self, run_id: str) -> RunView | None:
        return self.runs.get(run_id)

    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[bool, str]:
        run = self.runs.get(run_id)
        if run is None or run.state != "PAUSED":
            return False, "ABORT: Cannot resume a flow run that is not paused."
        if run.pause_expires is not None and time.time() > run.pause_expires:
            return False, "REJECT: The flow run pause has timed out and can no longer resume."
        self.runs[run_id] = replace(run, state="RUNNING")
        self.inputs[run_id] = run_input
        return True, "ACCEPT"

    def record(self, run_id: str, key: str, value: dict[str, Any]) -> None:
        self.records.append((key, value))
