"""Diagnosis against the sandbox: crash and OOM faults, scoping to one Deployment, logs, events."""

from __future__ import annotations

from k8s_runbooks.kube import events, logs, pods
from k8s_runbooks.sandbox.workloads.shop import DEFAULT_CRASH_MESSAGE
from tests.kube.conftest import NS, Cluster, wait_for


def _crashlooping(namespace: str, deployment: str) -> list:
    found = pods.find_unhealthy_pods(namespace, deployment)
    return [p for p in found if any(c.waiting_reason == "CrashLoopBackOff" for c in p.containers)]


def test_crash_fault_names_only_the_crashing_checkout_pods(cluster: Cluster, kube_env) -> None:
    cluster.apps.patch_namespaced_deployment(
        "checkout", NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "FAULT_CRASH_AFTER_S", "value": "1"}]}]}}}},
    )
    crashing = wait_for(lambda: _crashlooping(NS, "checkout"), 90, 1, "CrashLoopBackOff in checkout")
    unhealthy = pods.find_unhealthy_pods(NS, "checkout")
    status = pods.workload_status(NS, "checkout")
    new_rs = status.current_replicaset.name
    assert status.previous_replicaset is not None and status.previous_replicaset.revision == 1
    # Only pods of the new (crashing) ReplicaSet, none of payments, none of the healthy old ReplicaSet.
    assert unhealthy and all(p.owner_chain == [f"ReplicaSet/{new_rs}", "Deployment/checkout"] for p in unhealthy)
    assert not any(p.name.startswith("payments") for p in unhealthy)
    assert pods.find_unhealthy_pods(NS, "payments") == []
    pod = crashing[0]
    app = pod.containers[0]
    assert app.last_terminated_reason == "Error" and app.last_exit_code == 1
    assert any("CrashLoopBackOff" in r for r in pod.reasons) and pod.restart_count >= 1
    assert pod.restart_rate_per_min is not None and pod.restart_rate_per_min > 0

    described = pods.describe_pod(NS, pod.name)
    assert described.owner_chain == [f"ReplicaSet/{new_rs}", "Deployment/checkout"]
    assert "Ready" in described.conditions

    excerpt = logs.container_logs(NS, pod.name, previous=True)
    text = "\n".join(excerpt.lines)
    assert excerpt.error is None and DEFAULT_CRASH_MESSAGE in text
    assert "s3cr3t-pa55" not in text and "[REDACTED:url_password]" in text and excerpt.redactions >= 1

    evs = events.object_events(NS, "Pod", pod.name)
    assert any(e.reason == "BackOff" and e.type == "Warning" for e in evs)
    stamps = [e.last_seen for e in evs]
    assert stamps == sorted(stamps)


def test_no_previous_container_is_an_excerpt_error_not_an_exception(cluster: Cluster, kube_env) -> None:
    name = cluster.core.list_namespaced_pod(NS, label_selector="app=payments").items[0].metadata.name
    excerpt = logs.container_logs(NS, name, previous=True)
    assert excerpt.lines == [] and excerpt.error
    current = logs.container_logs(NS, name, tail_lines=5)
    assert current.error is None and 0 < len(current.lines) <= 5


def test_oom_fault_is_reported_as_oomkilled_137(cluster: Cluster, kube_env, ns: str) -> None:
    cluster.create_deployment(ns, "leaky", 1, env={"FAULT_LEAK_MB_PER_S": "40"}, memory_limit="96Mi")

    def oom() -> list:
        return [p for p in pods.find_unhealthy_pods(ns, "leaky") if p.containers and p.containers[0].last_terminated_reason == "OOMKilled"]

    pod = wait_for(oom, 90, 1, "OOMKilled")[0]
    assert pod.containers[0].last_exit_code == 137 and pod.containers[0].memory_limit == "96Mi"
    assert any("OOMKilled (exit code 137, memory limit 96Mi)" in r for r in pod.reasons)
