"""Discovery, CRUD, selectors, defaulting and error Status codes through kubectl and the Python client."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def test_discovery_lists_short_names_and_subresources(cluster) -> None:
    out = cluster.kubectl("api-resources").stdout
    for short, kind in (("po", "Pod"), ("deploy", "Deployment"), ("rs", "ReplicaSet"), ("ev", "Event"),
                        ("svc", "Service"), ("ns", "Namespace")):
        assert any(line.split()[1] == short and line.split()[-1] == kind for line in out.splitlines()[1:]), out
    core = httpx.get(f"{cluster.url}/api/v1", timeout=5).json()
    names = {r["name"]: r for r in core["resources"]}
    assert {"pods/log", "pods/status"} <= names.keys()
    apps = httpx.get(f"{cluster.url}/apis/apps/v1", timeout=5).json()
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")


def test_aggregated_discovery_request_gets_plain_json(cluster) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    resp = httpx.get(f"{cluster.url}/apis", headers={"Accept": accept}, timeout=5)
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["kind"] == "APIGroupList"
    assert {"apps", "storage.k8s.io", "authorization.k8s.io", "coordination.k8s.io", "rbac.authorization.k8s.io",
            "batch"} <= {g["name"] for g in resp.json()["groups"]}


def test_label_and_field_selectors(cluster, core, namespace, bodies) -> None:
    core.create_namespaced_pod(namespace, bodies.pod("web-1", {"app": "web", "tier": "front"}))
    core.create_namespaced_pod(namespace, bodies.pod("web-2", {"app": "web", "tier": "back"}))
    core.create_namespaced_pod(namespace, bodies.pod("db-1", {"app": "db"}))
    names = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "name").stdout.split()
    assert names == ["pod/web-1", "pod/web-2"]
    names = cluster.kubectl("get", "pods", "-n", namespace, "-l", "tier in (back),app!=db", "-o", "name").stdout.split()
    assert names == ["pod/web-2"]
    names = cluster.kubectl("get", "pods", "-n", namespace, "-l", "!tier", "-o", "name").stdout.split()
    assert names == ["pod/db-1"]
    names = cluster.kubectl("get", "pods", "-n", namespace, "--field-selector", "metadata.name=db-1,status.phase=Pending",
                            "-o", "name").stdout.split()
    assert names == ["pod/db-1"]
    listed = core.list_namespaced_pod(namespace, label_selector="app notin (web)")
    assert [p.metadata.name for p in listed.items] == ["db-1"]
    bad = cluster.kubectl("get", "pods", "-n", namespace, "--field-selector", "spec.bogus=1", check=False)
    assert bad.returncode != 0 and "field label not supported: spec.bogus" in bad.stderr
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(namespace, label_selector="app in (web")
    assert err.value.status == 400


def test_kubectl_table_columns(cluster, core, namespace, bodies) -> None:
    core.create_namespaced_pod(namespace, bodies.pod("p"))
    lines = cluster.kubectl("get", "pods", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["p", "0/1", "Pending", "0"]


def test_create_defaults_pod_and_deployment(core, apps, namespace, bodies) -> None:
    pod = core.create_namespaced_pod(namespace, bodies.pod("defaults", image="sandbox/pause:1"))
    assert pod.status.phase == "Pending"
    assert pod.spec.restart_policy == "Always" and pod.spec.termination_grace_period_seconds == 30
    assert pod.spec.dns_policy == "ClusterFirst"
    c = pod.spec.containers[0]
    assert c.image_pull_policy == "IfNotPresent" and c.termination_message_path == "/dev/termination-log"
    dep = apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.strategy.rolling_update.max_surge == "25%"
    assert dep.spec.revision_history_limit == 10 and dep.spec.progress_deadline_seconds == 600
    assert dep.metadata.resource_version and dep.metadata.uid


def test_error_status_codes_python_client(core, apps, namespace, bodies) -> None:
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("missing", namespace)
    assert err.value.status == 404 and json.loads(err.value.body)["reason"] == "NotFound"
    core.create_namespaced_pod(namespace, bodies.pod("dup"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, bodies.pod("dup"))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, bodies.pod("Bad_Name"))
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, bodies.deployment("neg", replicas=-1))
    assert err.value.status == 422 and "spec.replicas" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, bodies.deployment("mismatch", labels={"app": "other"}))
    status = json.loads(err.value.body)
    assert err.value.status == 422 and "`selector` does not match template `labels`" in status["message"]


def test_error_messages_through_kubectl(cluster, core, namespace, bodies) -> None:
    out = cluster.kubectl("get", "pod", "nope", "-n", namespace, check=False)
    assert out.returncode == 1 and 'Error from server (NotFound): pods "nope" not found' in out.stderr
    cluster.kubectl("run", "twice", "--image=sandbox/pause:1", "-n", namespace)
    out = cluster.kubectl("run", "twice", "--image=sandbox/pause:1", "-n", namespace, check=False)
    assert 'Error from server (AlreadyExists): pods "twice" already exists' in out.stderr
    out = cluster.kubectl("create", "namespace", "Not_Valid", check=False)
    assert 'The Namespace "Not_Valid" is invalid' in out.stderr
    out = cluster.kubectl("get", "widgets", check=False)
    assert 'the server doesn\'t have a resource type "widgets"' in out.stderr


def test_bad_requests_are_status_objects(cluster, namespace) -> None:
    url = f"{cluster.url}/api/v1/namespaces/{namespace}/pods"
    for body, ctype in ((b"{not json", "application/json"),
                        (b'{"kind": "Service", "apiVersion": "v1", "metadata": {"name": "x"}}', "application/json"),
                        (b'{"apiVersion": "v1", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}',
                         "application/json")):
        resp = httpx.post(url, content=body, headers={"Content-Type": ctype}, timeout=5)
        assert resp.status_code == 400, resp.text
        assert resp.json()["kind"] == "Status" and resp.json()["code"] == 400
    for path in ("/api/v1/widgets", "/apis/policy/v1", "/nothing/here", f"/api/v1/namespaces/{namespace}/pods/x/exec"):
        resp = httpx.get(cluster.url + path, timeout=5)
        assert resp.status_code == 404 and resp.json()["reason"] == "NotFound", path
    resp = httpx.patch(f"{url}/missing", content=b"{}", headers={"Content-Type": "text/plain"}, timeout=5)
    assert resp.status_code in (404, 415) and resp.json()["kind"] == "Status"


def test_stale_replace_is_conflict(core, namespace, bodies) -> None:
    created = core.create_namespaced_pod(namespace, bodies.pod("cas", {"v": "1"}))
    fresh = core.read_namespaced_pod("cas", namespace)
    fresh.metadata.labels = {"v": "2"}
    core.replace_namespaced_pod("cas", namespace, fresh)
    created.metadata.labels = {"v": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("cas", namespace, created)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_pod("cas", namespace).metadata.labels == {"v": "2"}


def test_delete_with_grace_marks_terminating_and_force_removes(cluster, core, namespace, bodies) -> None:
    core.create_namespaced_pod(namespace, bodies.pod("slow"))
    deleted = core.delete_namespaced_pod("slow", namespace, body=client.V1DeleteOptions(grace_period_seconds=30))
    assert deleted.metadata.deletion_timestamp is not None
    line = cluster.kubectl("get", "pod", "slow", "-n", namespace, "--no-headers").stdout.split()
    assert line[2] == "Terminating"
    cluster.kubectl("delete", "pod", "slow", "-n", namespace, "--grace-period=0", "--force")
    assert core.list_namespaced_pod(namespace).items == []


def test_statefulsets_daemonsets_and_ingresses_are_served(cluster, api_client, namespace) -> None:
    """What the diagnosis lists on every cluster answers as on a real one (empty lists, objects stored, kubectl
    short names), so a live collection here makes the same requests, and RBAC needs, as on GKE."""
    apps, net = client.AppsV1Api(api_client), client.NetworkingV1Api(api_client)
    assert apps.list_namespaced_stateful_set(namespace).items == []
    assert apps.list_namespaced_daemon_set(namespace).items == []
    ing = client.V1Ingress(metadata=client.V1ObjectMeta(name="web"), spec=client.V1IngressSpec(rules=[client.V1IngressRule(
        host="shop.example", http=client.V1HTTPIngressRuleValue(paths=[client.V1HTTPIngressPath(
            path="/", path_type="Prefix", backend=client.V1IngressBackend(service=client.V1IngressServiceBackend(
                name="web", port=client.V1ServiceBackendPort(number=80))))]))]))
    net.create_namespaced_ingress(namespace, ing)
    assert [i.metadata.name for i in net.list_namespaced_ingress(namespace).items] == ["web"]
    assert cluster.kubectl("get", "ing", "-n", namespace, "-o", "name").stdout.split() == ["ingress.networking.k8s.io/web"]
    for short in ("sts", "ds"):
        assert "No resources found" in cluster.kubectl("get", short, "-n", namespace).stderr
