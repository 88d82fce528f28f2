"""The three patch types, the scale subresource and the kubectl commands built on them."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes.client.rest import ApiException


def _env(apps, namespace: str, name: str) -> dict[str, str]:
    dep = apps.read_namespaced_deployment(name, namespace)
    return {e.name: e.value for e in dep.spec.template.spec.containers[0].env or []}


def test_strategic_merge_patch_merges_containers_and_env_by_name(apps, namespace, bodies) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}}
    apps.patch_namespaced_deployment("web", namespace, patch)  # the client sends strategic merge for dicts
    assert _env(apps, namespace, "web") == {"A": "1", "B": "2"}
    dep = apps.read_namespaced_deployment("web", namespace)
    assert dep.spec.template.spec.containers[0].image == "sandbox/shop:1"
    assert dep.metadata.generation == 2
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}}}
    apps.patch_namespaced_deployment("web", namespace, delete)
    assert _env(apps, namespace, "web") == {"B": "2"}


def test_merge_and_json_patch(cluster, apps, namespace, bodies) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    url = f"{cluster.url}/apis/apps/v1/namespaces/{namespace}/deployments/web"
    merge = {"metadata": {"labels": {"team": "shop"}}, "spec": {"replicas": 4}}
    resp = httpx.patch(url, json=merge, headers={"Content-Type": "application/merge-patch+json"}, timeout=5)
    assert resp.status_code == 200 and resp.json()["spec"]["replicas"] == 4
    assert resp.json()["metadata"]["labels"] == {"team": "shop"}
    ops = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "sandbox/shop:2"},
           {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}]
    resp = httpx.patch(url, content=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["spec"]["template"]["spec"]["containers"][0]["image"] == "sandbox/shop:2"
    bad = [{"op": "remove", "path": "/spec/nothing"}]
    resp = httpx.patch(url, content=json.dumps(bad), headers={"Content-Type": "application/json-patch+json"}, timeout=5)
    assert resp.status_code == 422 and resp.json()["kind"] == "Status"
    resp = httpx.patch(url, content=b"[{", headers={"Content-Type": "application/json-patch+json"}, timeout=5)
    assert resp.status_code == 400


def test_kubectl_patch_types(cluster, apps, namespace, bodies) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":3}}')
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "--type=json",
                    "-p", '[{"op":"add","path":"/spec/minReadySeconds","value":5}]')
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"sandbox/shop:3"}]}}}}')
    dep = apps.read_namespaced_deployment("web", namespace)
    assert (dep.spec.replicas, dep.spec.min_ready_seconds) == (3, 5)
    assert dep.spec.template.spec.containers[0].image == "sandbox/shop:3"
    assert dep.spec.template.spec.containers[0].ports[0].container_port == 8080


def test_kubectl_set_env_scale_restart_apply(cluster, apps, namespace, bodies, tmp_path) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    cluster.kubectl("set", "env", "deploy/web", "-n", namespace, "FAULT_LATENCY_MS=800")
    cluster.kubectl("set", "env", "deploy/web", "-n", namespace, "A-")
    assert _env(apps, namespace, "web") == {"FAULT_LATENCY_MS": "800"}
    cluster.kubectl("scale", "deploy/web", "-n", namespace, "--replicas=5")
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 5
    cluster.kubectl("rollout", "restart", "deploy/web", "-n", namespace)
    annotations = apps.read_namespaced_deployment("web", namespace).spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    manifest = tmp_path / "d.yaml"
    manifest.write_text(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: applied, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: applied}}}}
  template:
    metadata: {{labels: {{app: applied}}}}
    spec:
      containers: [{{name: app, image: "sandbox/shop:1", env: [{{name: X, value: "1"}}]}}]
""")
    assert "created" in cluster.kubectl("apply", "-f", str(manifest)).stdout
    manifest.write_text(manifest.read_text().replace('value: "1"', 'value: "2"'))
    assert "configured" in cluster.kubectl("apply", "-f", str(manifest)).stdout
    assert _env(apps, namespace, "applied") == {"X": "2"}


def test_scale_subresource(apps, namespace, bodies) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web", replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", namespace)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 6}})
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 6
    scale = apps.read_namespaced_deployment_scale("web", namespace)
    scale.spec.replicas = 1
    apps.replace_namespaced_deployment_scale("web", namespace, scale)
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 1
    scale.spec.replicas = 3  # stale resourceVersion now
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment_scale("web", namespace, scale)
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": -2}})
    assert err.value.status == 422


def test_status_subresource_keeps_spec(apps, namespace, bodies) -> None:
    apps.create_namespaced_deployment(namespace, bodies.deployment("web"))
    apps.patch_namespaced_deployment_status("web", namespace, {"status": {"readyReplicas": 2, "replicas": 2,
                                                                          "availableReplicas": 2,
                                                                          "updatedReplicas": 2}})
    dep = apps.read_namespaced_deployment("web", namespace)
    assert dep.status.ready_replicas == 2 and dep.spec.replicas == 2
    # a main-resource write cannot change status
    apps.patch_namespaced_deployment("web", namespace, {"status": {"readyReplicas": 0}})
    assert apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2
