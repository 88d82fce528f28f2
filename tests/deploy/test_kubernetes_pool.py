"""The Kubernetes work pool, end to end on the sandbox: Prefect's Kubernetes worker (prefect-kubernetes), running as
the `k8s-runbooks-worker` ServiceAccount, turns a pod-crash run into a Job from the shipped base job template; the
sandbox's Job controller and kubelet run its pod (the project image = this install) as the `k8s-runbooks`
ServiceAccount; the runbook reads the crashing workload under enforced RBAC and the run completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from k8s_runbooks.sandbox.demo_workload import api_client, ensure_workload
from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path
from tests.conftest import REPO, Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POOL = "kubernetes"
DEPLOYMENT = "pod-crash-kubernetes"
NS = "k8s-pool"
JOBS_NS = "k8s-runbooks"
TEMPLATE = REPO / "deployments" / "k8s" / "base" / "base-job-template.json"

REGISTER = """
import json, sys
from prefect.deployments.runner import EntrypointType
from flows.pod_crash import pod_crash
env = json.loads(sys.argv[1])
dep = pod_crash.to_deployment(name=%r, work_pool_name=%r, job_variables={"env": env}, enforce_parameter_schema=True,
                              entrypoint_type=EntrypointType.MODULE_PATH)
print(dep.apply())
""" % (DEPLOYMENT, POOL)


def _wait(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture
def worker(sandbox_only: Sandbox, tmp_path: Path) -> Any:
    box = sandbox_only
    assert box.state_dir is not None and box.prefect_api_url
    api = httpx.Client(base_url=box.prefect_api_url, timeout=30)
    template = json.loads(TEMPLATE.read_text())
    resp = api.post("/work_pools/", json={"name": POOL, "type": "kubernetes", "base_job_template": template})
    if resp.status_code == 409:
        resp = api.patch(f"/work_pools/{POOL}", json={"base_job_template": template})
    assert resp.status_code < 300, resp.text
    # The flow-run pods get the runbooks' settings from the ConfigMap the base manifests ship (config.yaml), here
    # with the sandbox's URLs, as an overlay sets them; the template's envFrom names it.
    settings = {k: v for k, v in box.env.items() if k.startswith("K8S_RUNBOOKS_") and k.endswith("_URL")}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "k8s-runbooks-config", "namespace": JOBS_NS},
              "data": {**settings, "PREFECT_API_URL": box.prefect_api_url, "DO_NOT_TRACK": "1",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}}
    admin = k8s.CoreV1Api(api_client(box.kubeconfig))
    try:
        admin.create_namespaced_config_map(JOBS_NS, config)
    except k8s.exceptions.ApiException as exc:
        assert exc.status == 409, exc
        admin.replace_namespaced_config_map("k8s-runbooks-config", JOBS_NS, config)
    env = {"K8S_RUNBOOKS_TASK_RETRY_BACKOFF_SECONDS": "0.1"}
    out = subprocess.run([sys.executable, "-c", REGISTER, json.dumps(env)], cwd=REPO, env=box.env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL, "--type", "kubernetes",
         "--name", "sandbox-kubernetes-worker"],
        env={**box.env, "KUBECONFIG": str(account_kubeconfig_path(box.state_dir, JOBS_NS, "k8s-runbooks-worker")),
             "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
             # The observer (kopf) follows pods cluster-wide to mark crashed runs; the sandbox runs without it.
             "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED": "false"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield api, tmp_path / "worker.log"
    finally:
        for _ in range(2):  # `prefect worker start` ignores the first SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_a_pod_crash_run_goes_through_the_kubernetes_work_pool(sandbox_only: Sandbox, worker: Any) -> None:
    api, worker_log = worker
    box = sandbox_only
    ensure_workload(box.kubeconfig, NS, {"web": 2}, env={"FAULT_CRASH_AFTER_S": "1", "FAULT_MESSAGE": "panic: pool test"})
    core = k8s.CoreV1Api(api_client(box.kubeconfig))
    _wait(lambda: any((cs.restart_count or 0) >= 1 for p in core.list_namespaced_pod(NS).items
                      for cs in (p.status.container_statuses or [])), 120, "a crash")
    dep = api.get(f"/deployments/name/pod-crash/{DEPLOYMENT}").json()
    assert dep["work_pool_name"] == POOL
    params = {"params": {"namespace": NS, "deployment": "web", "approval": "dry-run", "verify_timeout_seconds": 0}}
    run = api.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": params}).json()

    def final() -> dict[str, Any] | None:
        r = api.get(f"/flow_runs/{run['id']}").json()
        return r if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    try:
        done = _wait(final, 420, "the run to finish")
    except AssertionError:
        pods = core.list_namespaced_pod(JOBS_NS).items
        events = [(e.reason, e.message) for e in core.list_namespaced_event(JOBS_NS).items][-15:]
        raise AssertionError((Path(worker_log).read_text()[-2000:], [(p.metadata.name, p.status.phase, p.status.container_statuses,
                              p.status.conditions) for p in pods], events)) from None
    # The runbook ran to its own verdict in the pod (resolved, or escalated with "nothing was changed" where the
    # diagnosis has no safe action: a Failed run by design), not an infrastructure or permission failure.
    message = done["state"].get("message") or ""
    assert done["state"]["type"] in ("COMPLETED", "FAILED") and "denied" not in message and "Forbidden" not in message, \
        (done["state"]["type"], message)
    assert done["state"]["type"] == "COMPLETED" or "nothing was changed" in message, message
    namespace, job_name = done["infrastructure_pid"].split(":")
    assert namespace == JOBS_NS
    batch = k8s.BatchV1Api(api_client(box.kubeconfig))
    job = batch.read_namespaced_job(job_name, JOBS_NS)
    assert job.metadata.labels["prefect.io/flow-run-id"] == run["id"]
    # The engine reports Completed just before its process exits; then the Job controller marks the Job.
    try:
        # (`prefect flow-run execute` exits 0 once the run reached a final state: a Failed run's Job completes too.)
        finished = _wait(lambda: next((c.type for c in batch.read_namespaced_job(job_name, JOBS_NS).status.conditions or []
                                       if c.type in ("Complete", "Failed") and c.status == "True"), None), 120, "Job finished")
    except AssertionError:
        pods = core.list_namespaced_pod(JOBS_NS, label_selector=f"job-name={job_name}").items
        raise AssertionError((batch.read_namespaced_job(job_name, JOBS_NS).status,
                              [(p.status.phase, p.status.container_statuses) for p in pods],
                              [core.read_namespaced_pod_log(p.metadata.name, JOBS_NS)[-1500:] for p in pods])) from None
    [pod] = core.list_namespaced_pod(JOBS_NS, label_selector=f"job-name={job_name}").items
    assert pod.spec.service_account_name == "k8s-runbooks"
    assert pod.status.phase == ("Succeeded" if finished == "Complete" else "Failed")
    assert pod.spec.containers[0].image == "REGION-docker.pkg.dev/PROJECT/k8s-runbooks/runbooks:0.1.0"  # the template's
    text = core.read_namespaced_pod_log(pod.metadata.name, JOBS_NS)
    assert "pod-crash" in text and "Finished in state" in text, text[-2000:]
    assert f"Kubernetes job '{job_name}' created in namespace '{JOBS_NS}'" in Path(worker_log).read_text()
