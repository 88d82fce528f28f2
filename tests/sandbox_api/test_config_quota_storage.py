"""Secrets, ConfigMaps, ServiceAccounts, ResourceQuota admission and PVC binding, on a whole in-process cluster:
the object state, the event with the real component's words, and the kubectl line that shows it."""

from __future__ import annotations

import re
from typing import Any

from tests.helpers.wait import wait_for


def _deployment(name: str, container: dict[str, Any] | None = None, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "app", "image": "sandbox/pause:1", **(container or {})}],
                              "terminationGracePeriodSeconds": 1, **spec}}}}


def _waiting(live: Any, ns: str, app: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for p in live.pods(ns, app):
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                waiting = cs["state"].get("waiting") or {}
                if waiting.get("reason") == reason:
                    return waiting
        return None
    return wait_for(check, what=f"{app} waiting {reason}")


def _status_column(live: Any, ns: str) -> list[str]:
    return [line.split()[2] for line in live.kubectl("get", "pods", "-n", ns).stdout.splitlines()[1:]]


def test_missing_secret_then_missing_key_then_fixed(live, live_ns) -> None:
    env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    live.store.create("deployments", _deployment("api", {"env": env}), namespace=live_ns)
    waiting = _waiting(live, live_ns, "api", "CreateContainerConfigError")
    assert waiting["message"] == 'secret "db" not found'
    assert _status_column(live, live_ns) == ["CreateContainerConfigError"]
    pod = live.pods(live_ns, "api")[0]
    assert pod["status"]["phase"] == "Pending" and pod["status"]["podIP"]
    failed = wait_for(lambda: live.events(live_ns, pod["metadata"]["name"], "Failed"), what="Failed event")
    assert failed[0]["message"] == 'Error: secret "db" not found' and failed[0]["type"] == "Warning"
    assert failed[0]["source"] == {"component": "kubelet", "host": pod["spec"]["nodeName"]}

    live.kubectl("create", "secret", "generic", "db", "-n", live_ns, "--from-literal=user=app")
    waiting = wait_for(lambda: (w := _waiting(live, live_ns, "api", "CreateContainerConfigError"))
                       and "couldn't" in w["message"] and w, what="missing key")
    assert waiting["message"] == f"couldn't find key password in Secret {live_ns}/db"

    live.kubectl("create", "secret", "generic", "db2", "-n", live_ns, "--from-literal=password=s3cret")
    live.kubectl("patch", "deployment", "api", "-n", live_ns, "--type=json", "-p",
                 '[{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/valueFrom/secretKeyRef/name", '
                 '"value": "db2"}]')
    wait_for(lambda: _status_column(live, live_ns) == ["Running"], timeout=30, what="running after the fix")


def test_configmap_env_from_and_secret_volume(live, live_ns) -> None:
    live.store.create("deployments", _deployment("cfg", {"envFrom": [{"configMapRef": {"name": "settings"}}]}),
                      namespace=live_ns)
    assert _waiting(live, live_ns, "cfg", "CreateContainerConfigError")["message"] == 'configmap "settings" not found'

    volumes = [{"name": "certs", "secret": {"secretName": "tls-certs"}}]
    live.store.create("deployments", _deployment("vol", {"volumeMounts": [{"name": "certs", "mountPath": "/certs"}]},
                                                 volumes=volumes), namespace=live_ns)
    _waiting(live, live_ns, "vol", "ContainerCreating")
    pod = live.pods(live_ns, "vol")[0]
    message = 'MountVolume.SetUp failed for volume "certs" : secret "tls-certs" not found'
    assert wait_for(lambda: live.events(live_ns, pod["metadata"]["name"], "FailedMount"))[0]["message"] == message
    described = live.kubectl("describe", "pod", pod["metadata"]["name"], "-n", live_ns).stdout
    assert "FailedMount" in described and message in described and "ContainerCreating" in described
    assert "podIP" not in live.store.get("pods", live_ns, pod["metadata"]["name"])["status"]  # no sandbox yet

    live.kubectl("create", "secret", "generic", "tls-certs", "-n", live_ns, "--from-literal=tls.crt=x")
    live.kubectl("create", "configmap", "settings", "-n", live_ns, "--from-literal=MODE=fast")
    wait_for(lambda: sorted(_status_column(live, live_ns)) == ["Running", "Running"], timeout=30,
             what="both running once the objects exist")
    cm = live.kubectl("get", "configmap", "settings", "-n", live_ns).stdout.splitlines()
    assert cm[0].split() == ["NAME", "DATA", "AGE"] and cm[1].split()[:2] == ["settings", "1"]


def test_missing_service_account_is_failed_create_on_the_replicaset(live, live_ns) -> None:
    live.store.create("deployments", _deployment("robot", serviceAccountName="robot"), namespace=live_ns)
    events = wait_for(lambda: live.events(live_ns, reason="FailedCreate"), what="FailedCreate")
    rs = events[0]["involvedObject"]["name"]
    assert events[0]["involvedObject"]["kind"] == "ReplicaSet" and events[0]["source"]["component"] == "replicaset-controller"
    assert events[0]["message"] == (f'Error creating: pods "{rs}-" is forbidden: error looking up service account '
                                    f'{live_ns}/robot: serviceaccount "robot" not found')
    described = wait_for(lambda: (d := live.kubectl("describe", "deployment", "robot", "-n", live_ns).stdout)
                         and "ReplicaFailure" in d and d, what="ReplicaFailure condition")
    assert re.search(r"ReplicaFailure\s+True\s+FailedCreate", described)
    assert live.kubectl("get", "sa", "-n", live_ns).stdout.split()[3:5] == ["default", "0"]

    live.kubectl("create", "serviceaccount", "robot", "-n", live_ns)
    wait_for(lambda: _status_column(live, live_ns) == ["Running"], timeout=30, what="pods once the account exists")


def test_resource_quota_admission_and_kubectl(live, live_ns) -> None:
    live.kubectl("create", "quota", "cpu-quota", "-n", live_ns, "--hard=requests.cpu=1,pods=10")
    live.store.create("deployments", _deployment("big", {"resources": {"requests": {"cpu": "600m", "memory": "64Mi"}}},
                                                 replicas=2), namespace=live_ns)
    event = wait_for(lambda: live.events(live_ns, reason="FailedCreate"), what="quota FailedCreate")[0]
    rs = event["involvedObject"]["name"]
    assert re.fullmatch(rf'Error creating: pods "{rs}-[a-z0-9]{{5}}" is forbidden: exceeded quota: cpu-quota, '
                        r"requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1",
                        event["message"])
    table = wait_for(lambda: (t := live.kubectl("get", "resourcequota", "-n", live_ns).stdout.splitlines())
                     and "pods: 1/10" in t[1] and t, what="quota status")
    assert table[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert table[1].split()[2:] == ["pods:", "1/10,", "requests.cpu:", "600m/1"]
    described = live.kubectl("describe", "quota", "cpu-quota", "-n", live_ns).stdout
    assert re.search(r"requests.cpu\s+600m\s+1\n", described) and re.search(r"pods\s+1\s+10\n", described)

    # a quota on requests makes every container declare them
    live.store.create("deployments", _deployment("bare"), namespace=live_ns)
    bare = wait_for(lambda: [e for e in live.events(live_ns, reason="FailedCreate") if "bare" in e["message"]])
    assert bare[0]["message"].endswith("is forbidden: failed quota: cpu-quota: must specify requests.cpu for: app")

    live.kubectl("create", "quota", "svc-quota", "-n", live_ns, "--hard=services=1")
    live.store.create("services", {"metadata": {"name": "one"}, "spec": {"ports": [{"port": 80}]}}, namespace=live_ns)
    refused = live.kubectl("apply", "-n", live_ns, "-f", "-", check=False, input_text=(
        '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "two"}, "spec": {"ports": [{"port": 80}]}}'))
    assert refused.returncode != 0
    assert ('services "two" is forbidden: exceeded quota: svc-quota, requested: services=1, used: services=1, '
            "limited: services=1") in refused.stderr

    live.kubectl("create", "quota", "pvc-quota", "-n", live_ns, "--hard=persistentvolumeclaims=1,requests.storage=1Gi")
    claim = '{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "%s"}, "spec": {' \
            '"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}'
    live.kubectl("apply", "-n", live_ns, "-f", "-", input_text=claim % "first")
    refused = live.kubectl("apply", "-n", live_ns, "-f", "-", check=False, input_text=claim % "second")
    assert ('persistentvolumeclaims "second" is forbidden: exceeded quota: pvc-quota, requested: '
            "persistentvolumeclaims=1,requests.storage=1Gi, used: persistentvolumeclaims=1,requests.storage=1Gi, "
            "limited: persistentvolumeclaims=1,requests.storage=1Gi") in refused.stderr


def test_claims_bind_provision_or_say_why(live, live_ns) -> None:
    def claim(name: str, storage_class: str | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        if storage_class is not None:
            spec["storageClassName"] = storage_class
        return live.store.create("persistentvolumeclaims", {"metadata": {"name": name}, "spec": spec},
                                 namespace=live_ns)

    claim("plain", "")
    claim("typo", "fast-ssd")
    claim("auto", None)  # the default StorageClass provisions it
    assert wait_for(lambda: live.events(live_ns, "plain", "FailedBinding"))[0]["message"] == (
        "no persistent volumes available for this claim and no storage class is set")
    typo = wait_for(lambda: live.events(live_ns, "typo", "ProvisioningFailed"))[0]
    assert typo["message"] == 'storageclass.storage.k8s.io "fast-ssd" not found' and typo["type"] == "Warning"
    assert typo["source"]["component"] == "persistentvolume-controller"
    bound = wait_for(lambda: (c := live.store.get("persistentvolumeclaims", live_ns, "auto"))["status"].get("phase")
                     == "Bound" and c, what="provisioned claim")
    assert bound["spec"]["storageClassName"] == "standard" and bound["spec"]["volumeName"] == f"pvc-{bound['metadata']['uid']}"
    rows = {line.split()[0]: line.split() for line in live.kubectl("get", "pvc", "-n", live_ns).stdout.splitlines()}
    assert rows["NAME"] == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
                            "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert rows["auto"][1:6] == ["Bound", bound["spec"]["volumeName"], "1Gi", "RWO", "standard"]
    assert rows["typo"][1:3] == ["Pending", "fast-ssd"]
    pv = live.kubectl("get", "pv", bound["spec"]["volumeName"]).stdout.splitlines()[1].split()
    assert pv[1:6] == ["1Gi", "RWO", "Delete", "Bound", f"{live_ns}/auto"]

    live.store.create("deployments", _deployment("db", volumes=[{"name": "data", "persistentVolumeClaim": {
        "claimName": "typo"}}]), namespace=live_ns)
    pod = wait_for(lambda: live.pods(live_ns, "db"))[0]
    message = ("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes "
               "are available: 3 Preemption is not helpful for scheduling.")
    assert wait_for(lambda: live.events(live_ns, pod["metadata"]["name"], "FailedScheduling"))[0]["message"] == message
    assert "Used By:       " + pod["metadata"]["name"] in live.kubectl("describe", "pvc", "typo", "-n", live_ns).stdout

    live.store.create("storageclasses", {"metadata": {"name": "fast-ssd"}, "provisioner": "sandbox.k8s-runbooks.io/hostpath"})
    try:
        wait_for(lambda: _status_column(live, live_ns) == ["Running"], timeout=40, what="pod once its claim binds")
    finally:
        live.store.delete("storageclasses", None, "fast-ssd")
