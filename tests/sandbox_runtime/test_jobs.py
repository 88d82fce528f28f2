"""The sandbox's Job controller and the project image: a Job's pod runs to completion (or fails its backoff
limit) as a local process, the Job's status and conditions say so as kube-controller-manager's do, a finished Job
with ttlSecondsAfterFinished goes away with its pods; the project image runs this checkout's install."""

from __future__ import annotations

from typing import Any

from k8s_runbooks.sandbox import podlogs
from k8s_runbooks.sandbox.runtime import Runtime
from k8s_runbooks.sandbox.store import Store
from tests.sandbox_runtime.conftest import NS, wait_for


def job(name: str, command: list[str], image: str = "sandbox/exec:1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": image, "command": command[:1], "args": command[1:]}]}}}}


def condition(store: Store, name: str) -> list[tuple[str, str]]:
    j = store.get("jobs", NS, name)
    return [(c["type"], c.get("reason", "")) for c in (j.get("status") or {}).get("conditions") or []]


def pods_of_job(store: Store, name: str) -> list[dict[str, Any]]:
    return [p for p in store.list("pods", NS)[0] if (p["metadata"].get("labels") or {}).get("job-name") == name]


def test_a_job_runs_its_pod_to_completion(runtime: Runtime, store: Store) -> None:
    store.create("jobs", job("ok", ["/bin/sh", "-c", "echo done"]))
    wait_for(lambda: ("Complete", "CompletionsReached") in condition(store, "ok"), 30, what="Complete")
    status = store.get("jobs", NS, "ok")["status"]
    assert status["succeeded"] == 1 and status["active"] == 0 and status["completionTime"] and status["startTime"]
    assert condition(store, "ok")[0] == ("SuccessCriteriaMet", "CompletionsReached")
    [pod] = pods_of_job(store, "ok")
    uid = store.get("jobs", NS, "ok")["metadata"]["uid"]
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == uid
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job" and pod["status"]["phase"] == "Succeeded"
    reasons = [e["reason"] for e in store.list("events", NS)[0] if e["involvedObject"]["name"] == "ok"]
    assert reasons[:1] == ["SuccessfulCreate"] and "Completed" in reasons


def test_backoff_limit_fails_the_job(runtime: Runtime, store: Store) -> None:
    store.create("jobs", job("bad", ["/bin/sh", "-c", "exit 3"], backoffLimit=1))
    wait_for(lambda: ("Failed", "BackoffLimitExceeded") in condition(store, "bad"), 40, what="Failed")
    assert store.get("jobs", NS, "bad")["status"]["failed"] == 2  # the first try and one retry
    assert len(pods_of_job(store, "bad")) == 2


def test_a_finished_job_with_a_ttl_is_deleted_with_its_pods(runtime: Runtime, store: Store) -> None:
    store.create("jobs", job("ttl", ["/bin/true"], ttlSecondsAfterFinished=1))
    wait_for(lambda: store.try_get("jobs", NS, "ttl") is None, 30, what="the Job deleted after its TTL")
    wait_for(lambda: not pods_of_job(store, "ttl"), 30, what="its pod collected")


def test_the_project_image_is_this_install(runtime: Runtime, store: Store) -> None:
    store.create("jobs", job("cli", ["/usr/bin/env", "k8s-runbooks", "--help"], image="k8s-runbooks:dev"))
    wait_for(lambda: ("Complete", "CompletionsReached") in condition(store, "cli") or
             ("Failed", "BackoffLimitExceeded") in condition(store, "cli"), 60, what="the CLI Job finished")
    [pod] = pods_of_job(store, "cli")
    logs = podlogs.log_files(runtime.kubelet.state_dir, NS, pod["metadata"]["name"], pod["metadata"]["uid"], "main")
    text = "".join(p.read_text() for p in logs)
    assert ("Complete", "CompletionsReached") in condition(store, "cli"), text
    assert "Runbook automation for Kubernetes incidents" in text
