"""The guarded remediation path against the sandbox: dry-run, refusals, and each executed action."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from k8s_runbooks.guard import Guard, read_audit
from k8s_runbooks.kube import pods, workloads
from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef
from k8s_runbooks.settings import Settings
from tests.kube.conftest import Cluster, wait_for


def _act(ns: str, name: str, kind: ActionKind, **kw) -> Action:
    return Action(kind=kind, target=WorkloadRef(namespace=ns, name=name), reason="test", **kw)


def _snapshot(cluster: Cluster, ns: str) -> tuple:
    deps = {d.metadata.name: d.metadata.resource_version for d in cluster.apps.list_namespaced_deployment(ns).items}
    rss = {r.metadata.name: r.metadata.resource_version for r in cluster.apps.list_namespaced_replica_set(ns).items}
    pod_names = sorted(p.metadata.name for p in cluster.core.list_namespaced_pod(ns).items)
    return deps, rss, pod_names


def _pod_names(cluster: Cluster, ns: str, app: str) -> list[str]:
    return sorted(p.metadata.name for p in cluster.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                  if p.metadata.deletion_timestamp is None)


def test_dry_run_changes_nothing_but_is_audited(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    before = _snapshot(cluster, ns)
    guard = Guard(settings)
    victims = _pod_names(cluster, ns, "web")[:1]
    actions = [
        _act(ns, "web", ActionKind.delete_pods, pods=victims),
        _act(ns, "web", ActionKind.rollout_restart),
        _act(ns, "web", ActionKind.scale, replicas=1),
    ]
    results = [guard.execute(a, "dry-run", "tester", "run-dry") for a in actions]
    assert all(r.decision is Decision.dry_run and not r.executed for r in results)
    assert _snapshot(cluster, ns) == before
    audit = read_audit("run-dry", settings=settings)
    assert [r.decision for r in audit] == [Decision.dry_run] * 3 and all(r.actor == "tester" for r in audit)


def test_refusals_are_recorded_and_touch_nothing(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    before = _snapshot(cluster, ns)
    guard = Guard(settings.model_copy(update={"protected_namespaces": ["kube-system", ns]}))
    r = guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "tester", "run-ref")
    assert r.decision is Decision.refused and "protected" in r.detail

    guard = Guard(settings)
    cases = {
        "all pods": _act(ns, "web", ActionKind.delete_pods, pods=_pod_names(cluster, ns, "web")),
        "scale to 0": _act(ns, "web", ActionKind.scale, replicas=0),
        "missing": _act(ns, "nope", ActionKind.rollout_restart),
        "foreign pod": _act(ns, "web", ActionKind.delete_pods, pods=["someone-else"]),
        "no previous rs": _act(ns, "web", ActionKind.rollout_undo),
    }
    for label, action in cases.items():
        result = guard.execute(action, "auto", "tester", "run-ref")
        assert result.decision is Decision.refused and not result.executed, label
    small = Guard(settings.model_copy(update={"max_pods_per_action": 1}))
    assert small.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "tester", "run-ref").decision is Decision.refused
    assert _snapshot(cluster, ns) == before
    audit = read_audit("run-ref", settings=settings)
    assert len(audit) == len(cases) + 2 and all(a.decision is Decision.refused and a.reason for a in audit)
    assert "protected" in audit[0].reason and "allow_all_replicas" in audit[1].reason
    assert "does not exist" in audit[3].reason and "max_pods_per_action" in audit[-1].reason


def test_cooldown_and_run_budget(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    guard = Guard(settings.model_copy(update={"max_pods_per_run": 3}))
    first = guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "alice", "run-a")
    assert first.executed
    other_run = guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "bob", "run-b")
    assert other_run.decision is Decision.refused and "cooldown" in other_run.detail
    # Same run: cooldown does not apply but the per-run budget (2 + 2 > 3) does.
    same_run = guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "alice", "run-a")
    assert same_run.decision is Decision.refused and "max_pods_per_run" in same_run.detail
    decisions = [(a.flow_run_id, a.decision) for a in read_audit(settings=settings)]
    assert decisions == [("run-a", Decision.allowed), ("run-b", Decision.refused), ("run-a", Decision.refused)]


def test_delete_pods_gets_a_ready_replacement(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    victim = _pod_names(cluster, ns, "web")[0]
    result = Guard(settings).execute(_act(ns, "web", ActionKind.delete_pods, pods=[victim], grace_period_seconds=1),
                                     "auto", "tester", "run-del")
    assert result.executed and victim in result.detail
    wait_for(lambda: victim not in _pod_names(cluster, ns, "web"), 30, what="victim gone")
    assert workloads.wait_for_ready_replicas(ns, "web", 2, timeout_seconds=60, settings=settings)
    assert victim not in _pod_names(cluster, ns, "web")
    assert read_audit("run-del", settings=settings)[0].outcome.startswith("deleted 1 pod")


def test_scale_down_then_up_with_waits(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    guard = Guard(settings)
    down = guard.execute(_act(ns, "web", ActionKind.scale, replicas=0, allow_all_replicas=True), "auto", "t", "run-s")
    assert down.executed
    assert workloads.wait_for_ready_replicas(ns, "web", 0, timeout_seconds=60, settings=settings)
    up = guard.execute(_act(ns, "web", ActionKind.scale, replicas=2), "auto", "t", "run-s2")  # scale-up: no cooldown
    assert up.executed
    report = workloads.wait_until_healthy(ns, "web", stable_seconds=2, timeout_seconds=90, settings=settings)
    assert report.healthy and report.ready_replicas == 2, report.detail


def test_rollout_restart_and_undo(cluster: Cluster, settings: Settings, ns: str) -> None:
    cluster.create_deployment(ns, "web", 1)
    cluster.wait_ready(ns, "web", 1)
    guard = Guard(settings.model_copy(update={"cooldown_seconds": 0}))
    assert guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "t", "run-r").executed
    status = wait_for(lambda: (s := pods.workload_status(ns, "web")).revision == 2 and s, 30, what="revision 2")
    assert status.restarted_at and status.previous_replicaset.revision == 1
    cluster.apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "FAULT_LATENCY_MS", "value": "5"}]}]}}}})
    wait_for(lambda: pods.workload_status(ns, "web").revision == 3, 30, what="revision 3")
    assert guard.execute(_act(ns, "web", ActionKind.rollout_undo), "auto", "t", "run-r").executed
    after = wait_for(lambda: (s := pods.workload_status(ns, "web")).revision == 4 and s, 30, what="revision 4")
    assert after.containers[0].env_names == [] and after.restarted_at == status.restarted_at
    report = workloads.wait_until_healthy(ns, "web", stable_seconds=2, timeout_seconds=90, settings=settings)
    assert report.healthy, report.detail


def test_wait_until_healthy_watches_the_rollout_and_says_when_it_settled(cluster: Cluster, settings: Settings,
                                                                          ns: str) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    watches = cluster.requests("watch", "deployments", ns)
    guard = Guard(settings.model_copy(update={"cooldown_seconds": 0}))
    assert guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "t", "run-w").executed
    report = workloads.wait_until_healthy(ns, "web", stable_seconds=2, timeout_seconds=90, settings=settings)
    assert report.healthy and report.ready_replicas == 2, report.detail
    # The restart takes a readiness probe at least: the first look saw it unsettled and waited on a watch.
    assert cluster.requests("watch", "deployments", ns) > watches
    assert report.settled_at is not None and report.settled_after_seconds is not None
    # The verdict is the stability window that follows the settle (rounding: 0.1 s).
    assert report.waited_seconds - report.settled_after_seconds >= 2 - 0.1, report


def test_wait_until_healthy_polls_when_watching_is_forbidden(cluster: Cluster, settings: Settings, ns: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cluster.create_deployment(ns, "web", 2)
    cluster.wait_ready(ns, "web", 2)
    kube = get_kube(settings)
    real = kube.apps.list_namespaced_deployment
    watch_attempts: list[str] = []

    def no_watch(namespace: str, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            watch_attempts.append(namespace)
            raise ApiException(status=403, reason="Forbidden")
        return real(namespace, **kwargs)

    monkeypatch.setattr(kube.apps, "list_namespaced_deployment", no_watch)
    guard = Guard(settings.model_copy(update={"cooldown_seconds": 0}))
    assert guard.execute(_act(ns, "web", ActionKind.rollout_restart), "auto", "t", "run-f").executed
    with caplog.at_level(logging.WARNING, logger="k8s_runbooks.kube"):
        report = workloads.wait_until_healthy(ns, "web", stable_seconds=1, timeout_seconds=90, settings=settings)
    assert report.healthy and report.settled_at is not None, report.detail
    assert watch_attempts == [ns]  # refused once, then plain polling for the rest of the wait
    assert any("cannot watch" in r.getMessage() and "watch" in r.getMessage() for r in caplog.records)
