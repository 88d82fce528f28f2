"""Assemble a post-mortem from a real Prefect server: run record artifact, subflow, states, in order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run as runtime_flow_run
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.artifacts import artifact_key, publish_raw_markdown
from k8s_runbooks.errors import InvalidInput, NotFound
from k8s_runbooks.models import Action, ActionKind, ActionResult, Decision, Finding, WorkloadRef, utcnow
from k8s_runbooks_prefect.postmortem.assemble import assemble
from k8s_runbooks.postmortem.model import EvidenceItem, PostMortem, RunRecord
from k8s_runbooks.postmortem.render import render_html, render_markdown


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=60):
        yield


@flow(name="tiny-child")
def tiny_child() -> str:
    return "child done"


@flow(name="tiny-runbook")
def tiny_runbook(secret_line: str) -> str:
    now = utcnow()
    record = RunRecord(flow="tiny-runbook", runbook_title="Tiny", namespace="shop", deployment="checkout",
                       approval_mode="auto", drill=True, outcome="resolved", impact="1 of 3 replicas crashing")
    record.note("Crash detected", "checkout-1", "detected", at=now - timedelta(seconds=30))
    record.findings.append(Finding(step="identify", title="OOMKilled: memory limit 64Mi, exit 137",
                                   evidence={"kind": "oom", "container": "shop", "memory_limit": "64Mi", "exit_code": 137}))
    record.evidence.append(EvidenceItem(title="Previous log", kind="log", content=secret_line, step="identify"))
    publish_raw_markdown(artifact_key("tiny-runbook", "record"), record.to_markdown())  # first version
    record.note("Approved automatically: delete_pods", kind="approval")
    action = Action(kind=ActionKind.delete_pods, target=WorkloadRef(namespace="shop", name="checkout"), pods=["checkout-1"])
    record.actions.append(ActionResult(action=action, decision=Decision.allowed, executed=True, detail="deleted"))
    record.note("Action allowed: delete pods", kind="action")
    tiny_child()
    record.note("Recovered", kind="recovered")
    publish_raw_markdown(artifact_key("tiny-runbook", "record"), record.to_markdown())  # newest version wins
    return str(runtime_flow_run.id)


async def _assemble(run_id: str) -> PostMortem:
    async with get_client() as client:
        return await assemble(run_id, client)


def test_assemble_from_prefect_orders_timeline_and_includes_subflows(prefect_server: None, tmp_path: Path) -> None:
    state = tiny_runbook("token=[REDACTED:generic] <script>x</script>", return_state=True)
    run_id = state.result()
    pm = run_coro_as_sync(_assemble(run_id))
    assert pm is not None
    events = [e.event for e in pm.timeline]
    assert events.index("Crash detected") < events.index("Approved automatically: delete_pods") \
        < events.index("Action allowed: delete pods") < events.index("Recovered")
    assert any("subflow" in e and "tiny-child" in e and "Completed" in e for e in events)
    assert [e.at for e in pm.timeline] == sorted(e.at for e in pm.timeline)
    assert pm.drill and pm.impact == "1 of 3 replicas crashing"
    assert any("64Mi" in c for c in pm.root_cause)
    assert any("memory alert" in i for i in pm.action_items)
    assert any("delete (restart) pods checkout-1" in a for a in pm.actions_taken)
    assert pm.final_state.startswith("Completed")
    html = render_html(pm)
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "Crash detected" in render_markdown(pm)


def test_unknown_or_malformed_run_ids_fail_clearly(prefect_server: None) -> None:
    with pytest.raises(InvalidInput, match="not a flow run id"):
        run_coro_as_sync(_assemble("not-a-uuid"))
    with pytest.raises(NotFound, match="does not exist"):
        run_coro_as_sync(_assemble("00000000-0000-0000-0000-000000000000"))
