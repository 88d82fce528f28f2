"""Guard decisions that need no cluster: protected namespaces, patch validation, and the audit log."""

from __future__ import annotations

from multiprocessing import get_context
from pathlib import Path

import pytest

from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.guard import Guard, append_audit, read_audit
from k8s_runbooks.kube.workloads import resources_patch
from k8s_runbooks.models import Action, ActionKind, AuditRecord, Decision, WorkloadRef
from k8s_runbooks.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    # An unreachable kubeconfig: any cluster call would fail, so a refusal proves no call was made.
    return Settings(kubeconfig=tmp_path / "missing-kubeconfig", state_dir=tmp_path / "state")


@pytest.mark.parametrize("approval", ["auto", "required", "dry-run"])
def test_protected_namespace_is_refused_and_recorded(tmp_path: Path, approval: str) -> None:
    settings = _settings(tmp_path)
    action = Action(kind=ActionKind.rollout_restart, target=WorkloadRef(namespace="kube-system", name="coredns"), reason="drill")
    result = Guard(settings).execute(action, approval, "alice", "run-1")
    assert result.decision is Decision.refused and not result.executed
    [record] = read_audit("run-1", settings=settings)
    assert record.actor == "alice" and record.action == action and "protected" in record.reason and "drill" in record.reason


def test_check_does_not_record(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    action = Action(kind=ActionKind.scale, target=WorkloadRef(namespace="kube-public", name="x"), replicas=0)
    assert Guard(settings).check(action, "auto", "bob", "run-2").decision is Decision.refused
    assert read_audit(settings=settings) == []


def test_resources_patch_only_accepts_resources() -> None:
    body = resources_patch({"app": {"limits": {"memory": "512Mi"}}})
    assert body == {"spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "512Mi"}}}]}}}}
    for bad in ({}, {"app": {"image": "evil:1"}}, {"app": "512Mi"}):
        with pytest.raises(InvalidInput):
            resources_patch(bad)


def _append_many(state_dir: str, worker: int) -> None:
    settings = Settings(state_dir=Path(state_dir))
    action = Action(kind=ActionKind.rollout_restart, target=WorkloadRef(namespace="shop", name="checkout"))
    for i in range(50):
        append_audit(settings, AuditRecord(actor=f"w{worker}", flow_run_id=f"run-{worker}", action=action,
                                           decision=Decision.refused, reason=f"r{i}"))


def test_audit_log_survives_concurrent_writers(tmp_path: Path) -> None:
    ctx = get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    settings = Settings(state_dir=tmp_path)
    records = read_audit(settings=settings)
    assert len(records) == 200 and len(read_audit("run-2", settings=settings)) == 50
    assert (tmp_path / "audit.jsonl").read_text().count("\n") == 200
