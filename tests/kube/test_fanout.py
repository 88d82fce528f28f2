"""Identification over list pages and concurrent previous-log reads (the fan-out path), on the sandbox."""

from __future__ import annotations

import pytest

from k8s_runbooks.kube import logs, pods
from tests.kube.conftest import Cluster, wait_for

CRASH = ["sh", "-c", "echo 'fleet: starting'; echo 'fatal: cannot open /data/shard'; exit 1"]


def test_unhealthy_pods_are_found_across_list_pages_and_their_logs_read_in_order(
        cluster: Cluster, kube_env, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {"app": "fleet"}
    cluster.apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fleet", "labels": labels},
        "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "sandbox/pause:1"}]}}},
    })
    wait_for(lambda: (cluster.apps.read_namespaced_deployment("fleet", ns).status.ready_replicas or 0) == 4, 90, 1,
             "4 ready pause pods")
    # A stuck rollout: 2 new pods crash (never Ready), the 4 old ones keep running.
    cluster.apps.patch_namespaced_deployment("fleet", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "sandbox/exec:1", "command": CRASH,
         "readinessProbe": {"httpGet": {"path": "/", "port": 9}, "periodSeconds": 5}}]}}}})

    def crashed() -> list:
        items = cluster.core.list_namespaced_pod(ns, label_selector="app=fleet").items
        restarted = [p for p in items if any(c.restart_count >= 1 for c in p.status.container_statuses or [])]
        return restarted if len(items) == 6 and len(restarted) == 2 else []

    wait_for(crashed, 120, 1, "2 crashed pods next to 4 healthy ones")
    monkeypatch.setattr(pods, "LIST_PAGE", 4)  # 6 pods: two pages

    found = pods.find_unhealthy_pods(ns, "fleet")
    everything = cluster.core.list_namespaced_pod(ns, label_selector="app=fleet").items
    expected = sorted(p.metadata.name for p in everything if pods.diagnose(p).unhealthy)
    assert [p.name for p in found] == expected and len(expected) == 2
    assert all(p.owner_chain[-1] == "Deployment/fleet" and p.containers[0].last_exit_code == 1 for p in found)

    targets = [(p.name, "app") for p in found] + [(found[0].name, "app")]
    excerpts = logs.previous_logs(targets, ns, tail_lines=10, max_workers=3)
    assert [e.pod for e in excerpts] == [t[0] for t in targets]
    assert all(e.previous and "fatal: cannot open /data/shard" in e.lines for e in excerpts)
