"""The diagnosis engine on live evidence from the sandbox: a crash that arrived with a new revision is
diagnosed as such and rolled back, an OOM gets a bounded memory-limit patch, a Deployment scaled to zero is
scaled back, a healthy namespace matches no signature; snapshots replay the same diagnosis offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.hypothesis import Cause
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.diagnosis.sources.live import collect
from k8s_runbooks.diagnosis.sources.snapshot import read_snapshot, write_snapshot
from k8s_runbooks.models import ActionKind
from tests.kube.conftest import Cluster, wait_for


def _crashing(ns: str, name: str, cluster: Cluster) -> bool:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=f"app={name}").items
    return any(cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff"
               for p in pods for cs in p.status.container_statuses or [])


def test_crash_with_a_new_revision_is_rolled_back(cluster: Cluster, kube_env, ns: str) -> None:
    cluster.create_deployment(ns, "cart", 2)
    cluster.wait_ready(ns, "cart", 2)
    cluster.apps.patch_namespaced_deployment("cart", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "FAULT_CRASH_AFTER_S", "value": "1"}]}]}}}})
    wait_for(lambda: _crashing(ns, "cart", cluster), 120, 1, "CrashLoopBackOff in cart")

    evidence = collect(ns, service="cart", metrics=False)
    diagnosis = diagnose(evidence, "PodCrashLooping", focus="cart")
    top = diagnosis.top
    assert top is not None and top.cause is Cause.crash_after_rollout and top.object.name == "cart"
    assert top.details["introduced_by_revision"] == "2" and top.details["previous_revision"] == "1"
    assert any(f.source == "status" and "restarts" in f.text for f in top.facts)
    step = plan(diagnosis.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.rollout_undo and step.action.target.name == "cart"


def test_oom_gets_a_bounded_memory_limit_patch(cluster: Cluster, kube_env, ns: str) -> None:
    cluster.create_deployment(ns, "leaky", 1, env={"FAULT_LEAK_MB_PER_S": "40"}, memory_limit="96Mi")

    def oom() -> bool:
        return any(cs.last_state and cs.last_state.terminated and cs.last_state.terminated.reason == "OOMKilled"
                   for p in cluster.core.list_namespaced_pod(ns).items for cs in p.status.container_statuses or [])

    wait_for(oom, 120, 1, "OOMKilled")
    diagnosis = diagnose(collect(ns, metrics=False), "Service abnormal restart.")
    assert diagnosis.top is not None and diagnosis.top.cause is Cause.oom_killed and diagnosis.top.object.name == "leaky"
    step = plan(diagnosis.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.patch_resources
    limits = step.action.patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "192Mi"}


def test_zero_replicas_is_scaled_back_and_healthy_namespaces_match_nothing(cluster: Cluster, kube_env, ns: str) -> None:
    cluster.create_deployment(ns, "web", 1)
    cluster.wait_ready(ns, "web", 1)
    cluster.core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    healthy = diagnose(collect(ns, metrics=False))
    assert healthy.hypotheses == [], [h.summary for h in healthy.hypotheses]

    cluster.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    wait_for(lambda: not cluster.core.list_namespaced_pod(ns, label_selector="app=web").items, 60, 0.5, "web pods gone")
    diagnosis = diagnose(collect(ns, metrics=False))
    assert diagnosis.top is not None and diagnosis.top.cause is Cause.scaled_to_zero and diagnosis.top.object.name == "web"
    step = plan(diagnosis.hypotheses)[0]
    assert step.action is not None and step.action.kind is ActionKind.scale and step.action.replicas == 1


def test_snapshot_replays_the_same_diagnosis_through_the_cli(cluster: Cluster, kube_env, ns: str, tmp_path: Path) -> None:
    cluster.create_deployment(ns, "api", 1, env={"FAULT_CRASH_AFTER_S": "1", "DB_URL": "postgres://app:hunter2@db:5432/x"})
    wait_for(lambda: _crashing(ns, "api", cluster), 120, 1, "CrashLoopBackOff in api")
    out = tmp_path / "snap.json"
    cli = [sys.executable, "-m", "k8s_runbooks_cli"]
    done = subprocess.run([*cli, "snapshot", "-n", ns, "-o", str(out), "--symptom", "crash"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "hunter2" not in text and "[REDACTED" in text  # the env value with a password is redacted
    evidence, symptom = read_snapshot(out)
    assert symptom == "crash" and any(p.workload == "api" for p in evidence.pods)
    replay = subprocess.run([*cli, "diagnose", "--snapshot", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    data = json.loads(replay.stdout)
    direct = diagnose(evidence, symptom)
    assert [h["cause"] for h in data["hypotheses"]] == [h.cause.value for h in direct.hypotheses]
    assert data["hypotheses"][0]["object"] == "Deployment/api" and data["hypotheses"][0]["evidence"]


def test_snapshot_files_that_are_not_snapshots_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    cli = [sys.executable, "-m", "k8s_runbooks_cli", "diagnose", "--snapshot", str(bad)]
    for content, expected in (("{", "not valid JSON"), ('{"kind": "other"}', "not a k8s-runbooks snapshot"),
                              ('{"kind": "k8s-runbooks/snapshot", "version": 99}', "version 99"),
                              ('{"kind": "k8s-runbooks/snapshot", "version": 1, "evidence": {"pods": 3}}', "invalid evidence")):
        bad.write_text(content)
        done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    missing = subprocess.run([*cli[:-1], str(tmp_path / "none.json")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_snapshot_round_trip_keeps_the_evidence(tmp_path: Path) -> None:
    from k8s_runbooks.diagnosis.evidence import Evidence, Pod

    evidence = Evidence(namespace="x", pods=[Pod(name="a-5d9f8c7b6-abcde", namespace="x", workload="a", status="Running")])
    path = tmp_path / "s.json"
    write_snapshot(path, evidence, symptom="s")
    again, symptom = read_snapshot(path)
    assert again == evidence and symptom == "s"
