"""kube-state-metrics, cAdvisor and http_sd output of the runtime."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from k8s_runbooks.sandbox import metrics

from .conftest import NS, deployment, pods_of, ready_pods, wait_for


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_metrics_and_service_discovery(store, runtime):
    store.create("deployments", deployment("checkout", 2, resources={"limits": {"cpu": "500m", "memory": "256Mi"},
                                                                     "requests": {"cpu": "100m"}}), namespace=NS)
    pods = wait_for(lambda: len(ready_pods(store, "checkout")) == 2 and ready_pods(store, "checkout"), what="ready pods")
    names = {p["metadata"]["name"] for p in pods}
    wait_for(lambda: store.get("deployments", NS, "checkout").get("status", {}).get("availableReplicas") == 2,
             what="deployment status caught up")

    ksm = _samples(runtime.render_kube_state_metrics())
    running = {s.labels["pod"] for s in ksm["kube_pod_status_phase"] if s.labels["phase"] == "Running" and s.value == 1}
    assert names <= running
    assert all(s.labels["namespace"] == NS and s.labels["uid"] for s in ksm["kube_pod_info"])
    restarts = {s.labels["pod"]: s.value for s in ksm["kube_pod_container_status_restarts_total"]}
    assert {restarts[n] for n in names} == {0}
    assert {s.labels["container"] for s in ksm["kube_pod_container_status_ready"]} == {"app"}
    limits = {(s.labels["pod"], s.labels["resource"], s.labels["unit"]): s.value
              for s in ksm["kube_pod_container_resource_limits"]}
    some = next(iter(names))
    assert limits[(some, "cpu", "core")] == 0.5 and limits[(some, "memory", "byte")] == 256 * 1024 ** 2
    assert any(s.labels["resource"] == "cpu" and s.value == 0.1 for s in ksm["kube_pod_container_resource_requests"])
    dep = {s.name: s.value for s in (ksm["kube_deployment_spec_replicas"] + ksm["kube_deployment_status_replicas_available"])
           if s.labels["deployment"] == "checkout"}
    assert dep == {"kube_deployment_spec_replicas": 2, "kube_deployment_status_replicas_available": 2}
    owners = {s.labels["pod"]: (s.labels["owner_kind"], s.labels["owner_name"]) for s in ksm["kube_pod_owner"]}
    assert owners[some][0] == "ReplicaSet" and owners[some][1].startswith("checkout-")
    rs_owner = ksm["kube_replicaset_owner"][0].labels
    assert (rs_owner["owner_kind"], rs_owner["owner_name"]) == ("Deployment", "checkout")
    assert ksm["kube_replicaset_spec_replicas"][0].value == 2

    cad = _samples(runtime.render_cadvisor())
    cpu = {s.labels["pod"]: s.value for s in cad["container_cpu_usage_seconds_total"]}
    assert names <= set(cpu) and all(cpu[n] > 0 for n in names)
    mem = {s.labels["pod"]: s for s in cad["container_memory_working_set_bytes"]}
    assert all(mem[n].value > 1_000_000 and mem[n].labels["image"] == "sandbox/shop:1" and
               mem[n].labels["container"] == "app" and mem[n].labels["namespace"] == NS for n in names)
    assert {s.value for s in cad["container_spec_memory_limit_bytes"]} == {256 * 1024 ** 2}
    assert {s.value for s in cad["container_spec_cpu_quota"]} == {50000}
    assert "container_cpu_cfs_periods_total" in cad and "container_cpu_cfs_throttled_periods_total" in cad

    groups = runtime.sd_pods()
    assert len(groups) == 2
    by_pod = {g["labels"]["pod"]: g for g in groups}
    assert set(by_pod) == names
    for p in pods:
        g = by_pod[p["metadata"]["name"]]
        assert g["targets"] == [f"{p['status']['podIP']}:8080"]
        assert {k: g["labels"][k] for k in ("namespace", "container", "app", "job", "__metrics_path__")} == {
            "namespace": NS, "container": "app", "app": "checkout", "job": "kubernetes-pods",
            "__metrics_path__": "/metrics"}

    routes = dict(metrics.raw_routes(runtime.informer, runtime.kubelet))
    status, ctype, body = routes["/sd/pods"]({})
    assert status == 200 and ctype == "application/json" and body.startswith(b"[")
    status, ctype, body = routes["/metrics/kube-state-metrics"]({})
    assert status == 200 and ctype.startswith("text/plain") and _samples(body.decode())["kube_pod_info"]


def test_crash_metrics_are_reported(store, runtime):
    store.create("deployments", deployment("crashy", 1, env={"FAULT_CRASH_AFTER_S": "0.2"}), namespace=NS)

    def waiting_reason():
        ksm = _samples(runtime.render_kube_state_metrics())
        return ksm.get("kube_pod_container_status_waiting_reason") and ksm
    ksm = wait_for(lambda: (k := waiting_reason()) and any(
        s.labels["reason"] == "CrashLoopBackOff" for s in k["kube_pod_container_status_waiting_reason"]) and k,
        timeout=30, what="CrashLoopBackOff series")
    assert any(s.labels["reason"] == "Error" for s in ksm["kube_pod_container_status_last_terminated_reason"])
    assert {s.value for s in ksm["kube_pod_container_status_last_terminated_exitcode"]} == {1}
    assert max(s.value for s in ksm["kube_pod_container_status_restarts_total"]) >= 1


def test_cluster_series_the_family_alerts_need(store, runtime):
    """Endpoints (ready or not), unschedulable pods and quotas, with kube-state-metrics' names and labels."""
    store.create("deployments", deployment("web", 1), namespace=NS)
    pinned = deployment("pinned", 1)
    pinned["spec"]["template"]["spec"]["nodeSelector"] = {"disktype": "ssd"}
    store.create("deployments", pinned, namespace=NS)
    for name, app in (("web", "web"), ("nobody", "nothing-matches")):
        store.create("services", {"metadata": {"name": name}, "spec": {"selector": {"app": app},
                                                                     "ports": [{"port": 80, "targetPort": 8080}]}},
                     namespace=NS)
    web = wait_for(lambda: ready_pods(store, "web"), timeout=30, what="web ready")
    # after the pods: a quota on requests.cpu refuses pods that request none
    store.create("resourcequotas", {"metadata": {"name": "compute"}, "spec": {"hard": {"limits.memory": "1536Mi", "pods": "10"}}},
                 namespace=NS)

    def series():
        # The endpoints controller and the metrics' informer follow the pod's readiness asynchronously (as on a
        # cluster): wait until web's ready address is published, not only its Endpoints object.
        ksm = _samples(runtime.render_kube_state_metrics())
        endpoints = {s.labels["endpoint"] for s in ksm.get("kube_endpoint_info", [])}
        web_ready = any(s.labels["endpoint"] == "web" and s.labels["ready"] == "true" for s in ksm.get("kube_endpoint_address", []))
        return ksm if {"web", "nobody"} <= endpoints and web_ready and ksm.get("kube_pod_status_unschedulable") else None
    ksm = wait_for(series, timeout=30, what="endpoint (web's address ready) and unschedulable series")
    available = {s.labels["endpoint"]: s.value for s in ksm["kube_endpoint_address_available"]}
    assert available["web"] == 1 and available["nobody"] == 0
    addresses = [(s.labels["endpoint"], s.labels["ip"], s.labels["ready"]) for s in ksm["kube_endpoint_address"]]
    assert addresses == [("web", web[0]["status"]["podIP"], "true")]
    unschedulable = {s.labels["pod"] for s in ksm["kube_pod_status_unschedulable"]}
    assert {p["metadata"]["name"] for p in pods_of(store, "pinned")} == unschedulable
    scheduled = {(s.labels["pod"], s.labels["condition"]): s.value for s in ksm["kube_pod_status_scheduled"]}
    assert scheduled[(web[0]["metadata"]["name"], "true")] == 1
    assert all(scheduled[(p, "false")] == 1 for p in unschedulable)
    hard = {(s.labels["resource"], s.labels["type"]): s.value for s in ksm["kube_resourcequota"] if s.labels["resourcequota"] == "compute"}
    assert hard[("limits.memory", "hard")] == 1536 * 1024 ** 2 and hard[("pods", "hard")] == 10

    store.delete("pods", NS, web[0]["metadata"]["name"])  # graceful: terminating for a moment
    terminating = wait_for(lambda: _samples(runtime.render_kube_state_metrics()).get("kube_pod_deletion_timestamp"),
                           timeout=10, interval=0.05, what="deletion timestamp series")
    assert terminating[0].labels["pod"] == web[0]["metadata"]["name"] and terminating[0].value > 1.7e9
