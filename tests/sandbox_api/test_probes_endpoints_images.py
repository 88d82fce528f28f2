"""Probes against the pod's process, endpoints (and the traffic that fails without them), and image pulls from the
sandbox's registry table, on a whole in-process cluster."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest

from k8s_runbooks.sandbox import images
from tests.helpers.wait import wait_for


def _shop(name: str, **container: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}, "annotations": {
            "sandbox.k8s-runbooks.io/probe-period-ms": "200"}},
                     "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                         "name": "app", "image": "sandbox/shop:1",
                         "ports": [{"name": "http", "containerPort": 8080}], **container}]}}}}


def _create(live: Any, ns: str, body: dict[str, Any]) -> None:
    """Through the API (the official client), so the server's defaults apply as for any user."""
    live.apps.create_namespaced_deployment(ns, body)


def _pod(live: Any, ns: str, app: str) -> dict[str, Any]:
    return wait_for(lambda: live.pods(ns, app) and live.pods(ns, app)[0], what=f"a pod of {app}")


def test_liveness_probe_on_a_wrong_port_restarts_the_container(live, live_ns) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8081}, "initialDelaySeconds": 1, "failureThreshold": 2}
    _create(live, live_ns, _shop("live", livenessProbe=probe))
    pod = _pod(live, live_ns, "live")
    name = pod["metadata"]["name"]
    killing = wait_for(lambda: live.events(live_ns, name, "Killing"), timeout=30, what="Killing event")
    assert killing[0]["message"] == "Container app failed liveness probe, will be restarted"
    ip = live.store.get("pods", live_ns, name)["status"]["podIP"]
    unhealthy = live.events(live_ns, name, "Unhealthy")
    assert unhealthy[0]["message"] == (f'Liveness probe failed: Get "http://{ip}:8081/healthz": dial tcp {ip}:8081: '
                                       "connect: connection refused")
    assert unhealthy[0]["type"] == "Warning" and unhealthy[0]["involvedObject"]["fieldPath"] == "spec.containers{app}"
    cs = wait_for(lambda: (c := live.store.get("pods", live_ns, name)["status"]["containerStatuses"][0])
                  and c["restartCount"] >= 1 and c, timeout=30, what="a restart")
    assert cs["lastState"]["terminated"]["finishedAt"]
    described = live.kubectl("describe", "pod", name, "-n", live_ns).stdout
    assert "Liveness:       http-get http://:8081/healthz delay=1s timeout=1s period=10s" in described


def test_readiness_probe_on_a_wrong_port_keeps_the_pod_not_ready(live, live_ns) -> None:
    live.store.create("deployments", _shop("ready", readinessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1}),
                      namespace=live_ns)
    live.store.create("services", {"metadata": {"name": "ready"}, "spec": {"selector": {"app": "ready"},
                                                                           "ports": [{"port": 80, "targetPort": 8080}]}},
                      namespace=live_ns)
    pod = _pod(live, live_ns, "ready")
    name = pod["metadata"]["name"]
    unhealthy = wait_for(lambda: live.events(live_ns, name, "Unhealthy"), what="Unhealthy")[0]
    ip = live.store.get("pods", live_ns, name)["status"]["podIP"]
    assert unhealthy["message"] == f"Readiness probe failed: dial tcp {ip}:9999: connect: connection refused"
    ep = wait_for(lambda: (e := live.store.try_get("endpoints", live_ns, "ready")) and e.get("subsets") and e,
                  what="endpoints")
    assert [a["ip"] for a in ep["subsets"][0]["notReadyAddresses"]] == [ip] and "addresses" not in ep["subsets"][0]
    row = live.kubectl("get", "pods", "-n", live_ns).stdout.splitlines()[1].split()
    assert row[1:3] == ["0/1", "Running"]
    assert not live.events(live_ns, name, "Killing")  # readiness never restarts anything


def test_exec_liveness_probe_reports_the_command_output(live, live_ns) -> None:
    probe = {"exec": {"command": ["sh", "-c", "echo cache is stale; exit 1"]}, "failureThreshold": 5}
    _create(live, live_ns, _shop("execp", livenessProbe=probe))
    name = _pod(live, live_ns, "execp")["metadata"]["name"]
    assert wait_for(lambda: live.events(live_ns, name, "Unhealthy"))[0]["message"] == "Liveness probe failed: cache is stale"


def test_service_matching_nothing_has_no_endpoints_and_traffic_fails(live, live_ns) -> None:
    _create(live, live_ns, _shop("front"))
    live.store.create("services", {"metadata": {"name": "front", "labels": {"sandbox.k8s-runbooks.io/traffic": "true"}},
                                   "spec": {"selector": {"app": "frontend"}, "ports": [{"port": 80, "targetPort": "http"}]}},
                      namespace=live_ns)
    _pod(live, live_ns, "front")
    ep = wait_for(lambda: live.kubectl("get", "endpoints", "front", "-n", live_ns).stdout.splitlines(), what="ep row")
    assert ep[1].split()[:2] == ["front", "<none>"]
    described = live.kubectl("describe", "svc", "front", "-n", live_ns).stdout
    # kubectl >= 1.33 reads EndpointSlices: the placeholder slice of a service without endpoints prints nothing
    assert re.search(r"^Endpoints:\s*$", described, re.M) and re.search(r"^IP:\s+10\.96\.", described, re.M)

    def failures() -> float:
        text = httpx.get(f"{live.url}/metrics/traffic", timeout=5).text
        found = re.search(rf'namespace="{live_ns}",service="front",code="503"}} (\d+)', text)
        return float(found.group(1)) if found else 0.0
    first = wait_for(failures, what="503s for a service without endpoints")
    wait_for(lambda: failures() > first, what="more 503s")

    live.kubectl("patch", "svc", "front", "-n", live_ns, "-p", '{"spec":{"selector":{"app":"front"}}}')
    ready = wait_for(lambda: re.search(r"^Endpoints:\s+(\S+)$", live.kubectl("describe", "svc", "front", "-n", live_ns)
                                       .stdout, re.M), what="endpoints after the fix")
    assert ready.group(1).endswith(":8080")


@pytest.mark.parametrize(("image", "message"), [
    ("sandbox/shop:1x", 'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/sandbox/shop:1x": '
                        'failed to resolve reference "docker.io/sandbox/shop:1x": docker.io/sandbox/shop:1x: not found'),
    ("registry.example/shop:1", 'failed to pull and unpack image "registry.example/shop:1": failed to resolve reference '
                                '"registry.example/shop:1": failed to do request: Head "https://registry.example/v2/shop/'
                                'manifests/1": dial tcp: lookup registry.example on 127.0.0.53:53: no such host'),
    ("registry.sandbox.local/shop:1", 'failed to pull and unpack image "registry.sandbox.local/shop:1": failed to '
                                      'resolve reference "registry.sandbox.local/shop:1": failed to authorize: failed to '
                                      "fetch anonymous token: unexpected status from GET request to https://registry."
                                      "sandbox.local/token?scope=repository%3Ashop%3Apull&service=registry.sandbox.local:"
                                      " 401 Unauthorized"),
    ("nginx:1.25", 'failed to pull and unpack image "docker.io/library/nginx:1.25": failed to resolve reference '
                   '"docker.io/library/nginx:1.25": pull access denied, repository does not exist or may require '
                   "authorization: server message: insufficient_scope: authorization failed"),
])
def test_image_pull_failures_have_containerd_messages(image: str, message: str) -> None:
    with pytest.raises(images.ImageNotFound) as err:
        images.pull(image)
    assert str(err.value) == message


def test_image_pull_in_the_cluster_backs_off_and_a_pull_secret_opens_the_private_registry(live, live_ns) -> None:
    _create(live, live_ns, _shop("typo", image="sandbox/shop:1x"))
    name = _pod(live, live_ns, "typo")["metadata"]["name"]
    backoff = wait_for(lambda: (w := live.store.get("pods", live_ns, name)["status"]["containerStatuses"][0]["state"]
                                .get("waiting")) and w["reason"] == "ImagePullBackOff" and w, what="ImagePullBackOff")
    assert backoff["message"].startswith('Back-off pulling image "sandbox/shop:1x": ErrImagePull: rpc error: code = NotFound')
    reasons = [(e["reason"], e["message"]) for e in live.events(live_ns, name)]
    assert ("Failed", "Error: ErrImagePull") in reasons and ("Failed", "Error: ImagePullBackOff") in reasons
    assert ("BackOff", 'Back-off pulling image "sandbox/shop:1x"') in reasons
    assert ("Pulling", 'Pulling image "sandbox/shop:1x"') in reasons
    assert "ImagePullBackOff" in live.kubectl("get", "pods", "-n", live_ns).stdout

    auth = base64.b64encode(b"user:pass").decode()
    docker_config = json.dumps({"auths": {"registry.sandbox.local": {"auth": auth}}})
    live.store.create("secrets", {"metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
                                  "stringData": {".dockerconfigjson": docker_config}}, namespace=live_ns)
    private = _shop("private", image="registry.sandbox.local/shop:1")
    private["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    _create(live, live_ns, private)
    wait_for(lambda: any(p["status"].get("containerStatuses") and "running" in p["status"]["containerStatuses"][0]["state"]
                         for p in live.pods(live_ns, "private")), timeout=30, what="private image running")
