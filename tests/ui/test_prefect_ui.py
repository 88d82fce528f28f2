"""The Prefect UI in a real browser (Debian chromium via playwright) against the session sandbox: the runbook
deployments are listed, a custom pod-crash run filled in through the typed form starts and completes, and a
paused approval is resumed through the UI's form. bench/ui_reliability.py runs the same scenario 30+ times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k8s_runbooks_prefect import deploy
from k8s_runbooks.sandbox import demo_workload
from tests.conftest import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]
scenario = pytest.importorskip("tests.ui.scenario", reason="playwright is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def ui_sandbox(sandbox_only: Sandbox) -> Sandbox:
    if not os.path.exists(scenario.CHROMIUM):
        pytest.skip(f"{scenario.CHROMIUM} missing: apt-get install -y --no-install-recommends chromium")
    if not sandbox_only.prefect_api_url:
        pytest.skip("the sandbox runs without Prefect")
    demo_workload.ensure_workload(sandbox_only.kubeconfig, "drill-ui", {"web": 1})
    return sandbox_only


def test_ui_lists_deployments_runs_a_custom_run_and_resumes_an_approval(ui_sandbox: Sandbox, tmp_path: Path) -> None:
    api = ui_sandbox.prefect_api_url
    assert api is not None
    ui = api.removesuffix("/api")
    with scenario.browser() as b:
        result = scenario.run_scenario(b, ui, api, "drill-ui", "web", [s.name for s in deploy.available_specs()],
                                       scenario.probe_env(api), shots=tmp_path)
    assert result.approval_answer == {"approved": True, "action": "rollout_undo", "approver": "ui-test",
                                      "comment": result.approval_answer["comment"], "timed_out": False,
                                      "unanswered": False, "attestation": "", "void_reason": ""}
    assert str(result.approval_answer["comment"]).startswith("approved in the browser")
    assert result.server_errors == []
