"""Every fault family the sandbox can produce, diagnosed from live evidence and answered by the fix table:
the cause named, the object, and the plan (the action that fixes it, or the exact change escalated; never a
restart for a cause a restart cannot fix). Each live evidence is kept as a snapshot fixture
(tests/fixtures/snapshots/<kind>.json, redacted) that tests/unit/test_snapshot_fixtures.py replays offline.

Run with K8S_RUNBOOKS_RECORD_SNAPSHOTS=1 to rewrite the fixtures from this run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.live import collect
from k8s_runbooks.diagnosis.sources.snapshot import write_snapshot
from k8s_runbooks.kube.client import reset_clients
from k8s_runbooks.models import ActionKind
from k8s_runbooks.sandbox import demo_workload, supervisor
from k8s_runbooks.sandbox.settings import SandboxSettings
from k8s_runbooks.settings import get_settings
from tests.conftest import random_pod_subnet
from tests.helpers.inproc_cluster import InProcCluster, inproc_cluster
from tests.helpers.wait import wait_for

DEPLOY = "checkout"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
# fault kind -> (expected cause, expected answer: an action kind, or "escalate" with a text the change contains)
EXPECTED: dict[str, tuple[str, str, str]] = {
    # The Secret a healthy revision reads is deleted and a pod recreated: pods of that revision still run Ready,
    # so the template is not to blame and nothing a runbook does to pods brings the Secret back.
    "missing-secret": ("secret-missing", "escalate", "kubectl create secret generic checkout-db-credentials"),
    "image-not-found": ("image-not-found", ActionKind.rollout_undo.value, ""),
    "node-selector": ("node-selector-unsatisfiable", ActionKind.rollout_undo.value, ""),
    "taint": ("taint-not-tolerated", "escalate", "kubectl taint nodes"),
    "quota": ("quota-cpu-exceeded", "escalate", "resourcequota"),
    "liveness-port": ("liveness-probe-wrong-port", ActionKind.rollout_undo.value, ""),
    "readiness-port": ("readiness-probe-wrong-port", ActionKind.rollout_undo.value, ""),
    "service-selector": ("service-selects-no-pods", "escalate", "kubectl patch service"),
    "zero-replicas": ("scaled-to-zero", ActionKind.scale.value, ""),
    "crash": ("crash-after-rollout", ActionKind.rollout_undo.value, ""),
}
RESTARTS = {ActionKind.delete_pods.value, ActionKind.rollout_restart.value}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcCluster]:
    with inproc_cluster(tmp_path_factory.mktemp("fault-diagnosis"), random_pod_subnet()) as cluster:
        saved = os.environ.get("K8S_RUNBOOKS_KUBECONFIG")
        os.environ["K8S_RUNBOOKS_KUBECONFIG"] = str(cluster.kubeconfig)
        get_settings.cache_clear()
        reset_clients()
        yield cluster
        if saved is None:
            os.environ.pop("K8S_RUNBOOKS_KUBECONFIG", None)
        else:
            os.environ["K8S_RUNBOOKS_KUBECONFIG"] = saved
        get_settings.cache_clear()
        reset_clients()


@pytest.fixture
def shop(live: InProcCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, supervisor.SandboxConfig]]:
    monkeypatch.setenv("K8S_RUNBOOKS_STATE_DIR", str(tmp_path / "guard"))
    ns = f"fd-{uuid.uuid4().hex[:6]}"
    demo_workload.ensure_workload(live.kubeconfig, ns, {DEPLOY: 2, "payments": 1})
    demo_workload.wait_ready(live.kubeconfig, ns, [DEPLOY, "payments"], timeout_s=60)
    yield ns, supervisor.SandboxConfig.from_settings(SandboxSettings(), live.state_dir)
    live.store.delete("namespaces", None, ns)


def _diagnosed(ns: str, cause: str):  # type: ignore[no-untyped-def]
    evidence = collect(ns, service=DEPLOY, metrics=False)
    diagnosis = diagnose(evidence, focus=DEPLOY)
    return (evidence, diagnosis) if diagnosis.top is not None and diagnosis.top.cause.value == cause else None


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_fault_is_diagnosed_and_answered_by_the_fix_table(live: InProcCluster, shop: tuple[str, supervisor.SandboxConfig], kind: str) -> None:
    ns, cfg = shop
    cause, answer, change = EXPECTED[kind]
    supervisor.fault(cfg, kind, ns, DEPLOY, "1" if kind == "crash" else None)
    try:
        _check(ns, kind, cause, answer, change)
    finally:  # a taint covers every node: later tests need them back
        supervisor.fault(cfg, "clear", ns, DEPLOY)


def _check(ns: str, kind: str, cause: str, answer: str, change: str) -> None:
    try:
        found = wait_for(lambda: _diagnosed(ns, cause), timeout=60, interval=1.0, what=f"{cause} diagnosed after the {kind} fault")
    except AssertionError:
        diagnosis = diagnose(collect(ns, service=DEPLOY, metrics=False), focus=DEPLOY)
        raise AssertionError(f"{kind}: expected {cause}, got {[(h.cause.value, h.object.name, h.confidence) for h in diagnosis.hypotheses]}") from None
    evidence, diagnosis = found
    top = diagnosis.top
    assert top.facts, "a cause without the facts it rests on"
    assert top.object.name in (DEPLOY, ns), top.object
    step = plan(diagnosis.hypotheses)[0]
    if answer == "escalate":
        assert step.action is None and step.escalation is not None and change in step.escalation.change, step
    else:
        assert step.action is not None and step.action.kind.value == answer, step
        assert step.action.target.name == DEPLOY and step.action.target.namespace == ns
    assert not (step.action and step.action.kind.value in RESTARTS), "a restart proposed for a cause it cannot fix"
    if os.environ.get("K8S_RUNBOOKS_RECORD_SNAPSHOTS") == "1":
        write_snapshot(FIXTURES / f"{kind}.json", evidence, symptom="", service=DEPLOY)
