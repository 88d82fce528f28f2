"""Least privilege: the RBAC shipped in deployments/k8s/base/rbac.yaml is exactly what the runbooks use.

Everything here runs as the `k8s-runbooks` ServiceAccount and the sandbox enforces RBAC, so the record passing
shows the shipped rules suffice; test_rbac_rules.py shows that each of them is needed.

The record: the session sandbox's request audit, diffed around a window in which only runbook code talks to
the API (the test process makes no Kubernetes call inside it):
  - pod-crash (dry-run and auto-approved), high-latency (dry-run), incident-response (dry-run) and a
    pod-crash drill (dry-run), each in its own process as the CLI runs them, concurrently;
  - every action kind through the guard (the one path of every change), approved, in-process, on a scratch
    Deployment in a scratch namespace — so every write a runbook can make is observed, not just the ones a
    particular incident happened to need.
`k8s_runbooks.rbac` turns the record into grants (apiGroup, resource[/subresource], verb; namespaced or
cluster-wide) and compares them with the Role/ClusterRole bound to the `k8s-runbooks` ServiceAccount.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from k8s_runbooks import rbac
from k8s_runbooks.guard import Guard
from k8s_runbooks.kube.client import reset_clients
from k8s_runbooks.models import Action, ActionKind, ActionResult, WorkloadRef
from k8s_runbooks.kube.workloads import SELECTOR_UNDO_ANNOTATION
from k8s_runbooks.sandbox.demo_workload import deployment_body, flags_configmap_body, namespace_body, service_body, set_fault
from k8s_runbooks.sandbox.identities import grant_namespace
from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path
from k8s_runbooks.settings import Settings
from tests.conftest import REPO, Sandbox
from tests.helpers.audit import requests_since as _diff
from tests.helpers.audit import user_requests
from tests.reliability._faults_helpers import NS, Cluster, Runbooks, RunResult, pod_crash_params, wait_for

RBAC_FILE = REPO / "deployments" / "k8s" / "base" / "rbac.yaml"
SERVICE_ACCOUNT = "k8s-runbooks"


@dataclass
class Record:
    requests: list[dict[str, Any]]
    runs: dict[str, RunResult]
    guard: list[ActionResult]


def _every_action(settings: Settings, namespace: str, name: str, pods: list[str]) -> list[ActionResult]:
    guard, target = Guard(settings), WorkloadRef(namespace=namespace, name=name)

    def run(kind: ActionKind, **kw: Any) -> ActionResult:
        return guard.execute(Action(kind=kind, target=target, reason="least-privilege record", **kw), "auto",
                             "least-privilege-test", f"lp-{kind.value}")

    results = [run(ActionKind.delete_pods, pods=pods[:1], grace_period_seconds=0),
               run(ActionKind.set_flags, patch={"flags": {"new-checkout-flow": "off"}}),
               # the undo of a traffic redirect (the redirect itself needs two serving revisions: same verbs)
               run(ActionKind.restore_traffic, patch={"service": name}),
               run(ActionKind.rollout_restart)]
    time.sleep(2)  # the controller creates the restarted ReplicaSet: then there is a revision to go back to
    results += [
        run(ActionKind.rollout_undo),
        run(ActionKind.scale, replicas=3),
        run(ActionKind.patch_resources, patch={name: {"limits": {"cpu": "400m"}}}),
        run(ActionKind.inject_fault, patch={"env": {"FAULT_LATENCY_MS": "1"}}),
        run(ActionKind.remove_fault, patch={"remove_env": ["FAULT_LATENCY_MS"]}),
    ]
    return results


@pytest.fixture(scope="module")
def record(sandbox_only: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Record]:
    box, cluster = sandbox_only, Cluster(sandbox_only)
    tmp = tmp_path_factory.mktemp("least-privilege")
    runbooks = Runbooks(box, tmp, K8S_RUNBOOKS_COOLDOWN_SECONDS="0")
    scratch, app = f"lp-{secrets.token_hex(3)}", "lp-app"
    cluster.core.create_namespace(namespace_body(scratch))
    grant_namespace(box.kubeconfig, scratch)  # a target namespace gets the shipped runbook Role (deployments/README.md)
    cluster.apps.create_namespaced_deployment(scratch, deployment_body(app, 2, namespace=scratch))
    cluster.core.create_namespaced_config_map(scratch, flags_configmap_body(scratch))
    redirected = service_body(app, scratch)  # as a redirect leaves it: the original selector kept for the undo
    redirected["metadata"]["annotations"] = {SELECTOR_UNDO_ANNOTATION: json.dumps({"app": app})}
    redirected["spec"]["selector"]["pod-template-hash"] = "lp"
    cluster.core.create_namespaced_service(scratch, redirected)
    try:
        cluster.inject_crash(box, "checkout")
        wait_for(lambda: (cluster.apps.read_namespaced_deployment(app, scratch).status.ready_replicas or 0) >= 2, 120,
                 f"{scratch}/{app} ready")
        pods = sorted(p.metadata.name for p in cluster.core.list_namespaced_pod(scratch).items)
        assert box.state_dir is not None  # the runbooks' ServiceAccount: the sandbox enforces the shipped RBAC
        settings = Settings(kubeconfig=account_kubeconfig_path(box.state_dir), state_dir=tmp / "guard", cooldown_seconds=0)

        before = user_requests(box.api_url)  # ---- from here on, only runbook code calls the API
        procs = {
            "pod-crash dry-run": runbooks.start("pod-crash", **pod_crash_params("checkout", approval="dry-run")),
            "pod-crash auto": runbooks.start("pod-crash", **pod_crash_params("checkout", approval="auto", drill=True)),
            "high-latency dry-run": runbooks.start("high-latency", namespace=NS, service="checkout", approval="dry-run",
                                                   rate_window="30s"),
            "incident dry-run": runbooks.start("incident", namespace=NS, service="checkout", approval="dry-run",
                                               alertname="PodCrashLooping"),
            "drill dry-run": runbooks.start("drill-pod-crash", namespace=NS, deployment="payments", dry_run=True,
                                            response="direct"),
        }
        runs = {name: Runbooks.finish(proc, timeout=480) for name, proc in procs.items()}
        reset_clients()
        guard = _every_action(settings, scratch, app, pods)
        reset_clients()
        requests = _diff(before, user_requests(box.api_url))  # ---- end of the window
        yield Record(requests, runs, guard)
    finally:
        set_fault(box.kubeconfig, NS, "checkout", "clear")
        cluster.apps.delete_namespaced_deployment(app, scratch)
        cluster.core.delete_namespace(scratch)


def test_the_record_covers_every_runbook_and_every_action(record: Record) -> None:
    for name, run in record.runs.items():
        assert run.state in ("COMPLETED", "FAILED") and run.flow_run_id, (name, run.state, run.stderr[-3000:])
    assert record.runs["pod-crash dry-run"].state == "COMPLETED", (record.runs["pod-crash dry-run"].message,
                                                                 record.runs["pod-crash dry-run"].stderr[-3000:])
    assert record.runs["pod-crash auto"].state == "COMPLETED", record.runs["pod-crash auto"].stderr[-3000:]
    assert [(r.action.kind.value, r.executed) for r in record.guard] == [(k.value, True) for k in (
        ActionKind.delete_pods, ActionKind.set_flags, ActionKind.restore_traffic, ActionKind.rollout_restart, ActionKind.rollout_undo, ActionKind.scale,
        ActionKind.patch_resources, ActionKind.inject_fault, ActionKind.remove_fault)], [r.detail for r in record.guard]
    verbs = {r["verb"] for r in record.requests}
    assert {"get", "list", "patch", "delete"} <= verbs, record.requests


def test_shipped_rbac_is_exactly_the_derived_minimum(record: Record) -> None:
    derived = rbac.derive(record.requests)
    actual = rbac.shipped(RBAC_FILE.read_text(), SERVICE_ACCOUNT)
    diff = rbac.compare(derived, actual)
    assert diff == {"missing": {"namespaced": [], "cluster": []}, "extra": {"namespaced": [], "cluster": []}}, (
        f"{diff}\nminimal rules from the record:\n{rbac.render(derived)}")
    print(f"\nleast privilege: {sum(r['count'] for r in record.requests)} requests recorded; minimal RBAC:\n"
          f"{rbac.render(derived)}")


def test_no_wildcards_secrets_or_exec(record: Record) -> None:
    assert rbac.problems(rbac.derive(record.requests)) == []
    assert rbac.problems(rbac.shipped(RBAC_FILE.read_text(), SERVICE_ACCOUNT)) == []


def test_derivation_scopes_merges_and_flags() -> None:
    requests = [
        {"verb": "get", "resource": "pods", "subresource": "log", "namespace": "shop", "group": "", "count": 2},
        {"verb": "patch", "resource": "deployments", "subresource": "", "namespace": "drill-x", "group": "apps", "count": 1},
        {"verb": "get", "resource": "deployments", "subresource": "", "namespace": "shop", "group": "apps", "count": 1},
        {"verb": "get", "resource": "namespaces", "subresource": "", "namespace": "", "group": "", "count": 1},
        {"verb": "list", "resource": "pods", "subresource": "", "namespace": "shop", "group": "", "count": 0},
    ]
    derived = rbac.derive(requests)
    assert derived.namespaced == {("", "pods/log", "get"), ("apps", "deployments", "patch"), ("apps", "deployments", "get")}
    assert derived.cluster == {("", "namespaces", "get")}
    assert rbac.rules_yaml(derived.namespaced) == [
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}]
    manifests = """
kind: Role
metadata: {name: r, namespace: shop}
rules: [{apiGroups: [""], resources: [secrets, pods/exec], verbs: ["*"]}]
---
kind: RoleBinding
metadata: {name: r, namespace: shop}
roleRef: {kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: sa}]
---
kind: ClusterRole
metadata: {name: unbound}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
"""
    shipped = rbac.shipped(manifests, "sa")
    assert shipped.cluster == set()  # an unbound ClusterRole grants nothing
    assert sorted(rbac.problems(shipped)) == [
        "namespaced: forbidden resource pods/exec (*)", "namespaced: forbidden resource secrets (*)",
        "namespaced: wildcard in core/pods/exec *", "namespaced: wildcard in core/secrets *"]
    assert rbac.compare(derived, shipped)["missing"]["cluster"] == [("", "namespaces", "get")]
