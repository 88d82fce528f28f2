"""Every rule the runbooks' ServiceAccount is granted in deployments/k8s/base/rbac.yaml is needed.

The sandbox enforces RBAC. As the `k8s-runbooks` ServiceAccount, in a target namespace granted the shipped
Role, each runbook operation below works; with the one grant it uses taken out of the Role (or the
ClusterRole), that operation fails with the API server's Forbidden naming the verb and resource. So removing
any single rule makes the test of that rule (`test_each_rule_is_needed[<grant>]`) fail, and
test_least_privilege.py shows nothing beyond these rules is used. A shipped grant with no probe here fails
`test_every_shipped_grant_has_a_probe`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks import rbac
from k8s_runbooks.drills.kube_faults import namespace_allows_drills
from k8s_runbooks.errors import Forbidden
from k8s_runbooks.guard_state import GuardState, cooldown_lease_name
from k8s_runbooks.kube import leases, workloads
from k8s_runbooks.kube.client import Kube, Op, get_kube, reset_clients
from k8s_runbooks.kube.events import object_events
from k8s_runbooks.kube.logs import container_logs
from k8s_runbooks.diagnosis.sources.live import collect
from k8s_runbooks.kube.pods import deployment_replicasets, find_unhealthy_pods, read_deployment
from k8s_runbooks.models import Action, ActionKind, WorkloadRef
from k8s_runbooks.sandbox.demo_workload import FLAGS_CONFIGMAP, ensure_workload, wait_ready
from k8s_runbooks.sandbox.identities import grant_namespace, shipped_rbac
from k8s_runbooks.sandbox.kubeconfig import account_kubeconfig_path
from k8s_runbooks.settings import Settings
from tests.conftest import REPO, Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RBAC_FILE = REPO / "deployments" / "k8s" / "base" / "rbac.yaml"
APP = "rules"


@dataclass
class Probe:
    settings: Settings
    kube: Kube
    ns: str
    pod: str

    def action(self, name: str) -> Action:
        return Action(kind=ActionKind.rollout_restart, target=WorkloadRef(namespace=self.ns, name=name), reason="rbac")


def _claim_fresh(p: Probe) -> Any:
    """A first cooldown on a workload: creates its Lease."""
    return GuardState(p.kube, 300, 10).claim(p.action(f"fresh-{secrets.token_hex(3)}"), 0, False, "rbac-probe")


def _claim_expired(p: Probe) -> Any:
    """A cooldown over an expired one: updates the existing Lease (made just before by the admin)."""
    return GuardState(p.kube, 300, 10).claim(p.action("expired"), 0, False, "rbac-probe")


# grant -> the runbook operation that needs it (what the record of test_least_privilege shows each one doing)
def _list(resource: str, api: str = "core", namespaced: bool = True) -> Callable[[Probe], Any]:
    """The list call the diagnosis engine makes for `resource` (diagnosis/sources/live.py), through the client seam."""
    def probe(p: Probe) -> Any:
        client = {"core": p.kube.core, "apps": p.kube.apps, "storage": k8s.StorageV1Api(p.kube.api_client),
                  "networking": k8s.NetworkingV1Api(p.kube.api_client)}[api]
        singular = {"endpoints": "endpoints", "persistentvolumeclaims": "persistent_volume_claim",
                    "persistentvolumes": "persistent_volume", "resourcequotas": "resource_quota",
                    "serviceaccounts": "service_account", "configmaps": "config_map",
                    "storageclasses": "storage_class", "statefulsets": "stateful_set", "daemonsets": "daemon_set",
                    "ingresses": "ingress"}.get(resource, resource.rstrip("s"))
        if namespaced:
            return p.kube.call(Op("list", resource, p.ns), getattr(client, f"list_namespaced_{singular}"), p.ns)
        return p.kube.call(Op("list", resource), getattr(client, f"list_{singular}"))
    return probe


# grant -> the runbook operation that needs it (what the record of test_least_privilege shows each one doing)
PROBES: dict[tuple[str, str, str, str], tuple[str, Callable[[Probe], Any]]] = {
    ("namespaced", "", "pods", "list"): ("find the unhealthy pods", lambda p: find_unhealthy_pods(p.ns, APP, settings=p.settings)),
    ("namespaced", "", "pods", "delete"): ("restart a pod", lambda p: workloads._delete_pods(p.kube, p.ns, [p.pod], 0)),
    ("namespaced", "", "pods/log", "get"): ("read a container's log",
                                            lambda p: container_logs(p.ns, p.pod, APP, tail_lines=5, settings=p.settings)),
    ("namespaced", "", "events", "list"): ("collect events", lambda p: object_events(p.ns, "Deployment", APP, settings=p.settings)),
    ("namespaced", "apps", "deployments", "get"): ("read the Deployment", lambda p: read_deployment(p.kube, p.ns, APP)),
    ("namespaced", "apps", "deployments", "list"): ("diagnosis: the namespace's Deployments", _list("deployments", "apps")),
    ("namespaced", "apps", "deployments", "watch"): (
        "wait for the rollout (watch)", lambda p: workloads.wait_for_rollout_event(p.kube, p.ns, APP, None, None, 1)),
    ("namespaced", "apps", "deployments", "patch"): ("rolling restart", lambda p: workloads._rollout_restart(p.kube, p.ns, APP)),
    ("namespaced", "apps", "deployments/scale", "patch"): ("scale", lambda p: workloads._scale(p.kube, p.ns, APP, 2)),
    ("namespaced", "apps", "statefulsets", "list"): ("diagnosis: the namespace's StatefulSets", _list("statefulsets", "apps")),
    ("namespaced", "apps", "daemonsets", "list"): ("diagnosis: the namespace's DaemonSets", _list("daemonsets", "apps")),
    ("namespaced", "networking.k8s.io", "ingresses", "list"): ("diagnosis: gateway routes", _list("ingresses", "networking")),
    # containment: the feature flag turned off (configmap flag provider), traffic narrowed to the stable pods
    ("namespaced", "", "configmaps", "get"): ("read the feature flags", lambda p: workloads._set_configmap_keys(
        p.kube, p.ns, FLAGS_CONFIGMAP, {"rbac-probe": "off"})),
    ("namespaced", "", "configmaps", "patch"): ("turn a feature flag off", lambda p: workloads._set_configmap_keys(
        p.kube, p.ns, FLAGS_CONFIGMAP, {"rbac-probe": "off"})),
    ("namespaced", "", "services", "get"): ("read the Service", lambda p: workloads.read_service(p.kube, p.ns, APP)),
    ("namespaced", "", "services", "patch"): ("redirect traffic to the stable pods",
                                              lambda p: workloads._redirect_service(p.kube, p.ns, APP, "stable")),
    ("namespaced", "apps", "replicasets", "list"): (
        "the Deployment's revisions", lambda p: deployment_replicasets(p.kube, read_deployment(p.kube, p.ns, APP))),
    **{("namespaced", "", r, "list"): (f"diagnosis: {r}", _list(r)) for r in (
        "services", "endpoints", "resourcequotas", "persistentvolumeclaims", "serviceaccounts", "configmaps")},
    ("namespaced", "coordination.k8s.io", "leases", "get"): (
        "read the cooldown", lambda p: GuardState(p.kube, 300, 10).refusal(p.action(APP), 1, False, "rbac-probe")),
    ("namespaced", "coordination.k8s.io", "leases", "create"): ("take a first cooldown", _claim_fresh),
    ("namespaced", "coordination.k8s.io", "leases", "update"): ("take a cooldown again", _claim_expired),
    ("cluster", "", "namespaces", "get"): ("a drill checks the namespace label", lambda p: namespace_allows_drills(p.kube, p.ns)),
    ("cluster", "", "nodes", "list"): ("diagnosis: nodes (taints, capacity)", _list("nodes", namespaced=False)),
    ("cluster", "", "persistentvolumes", "list"): ("diagnosis: volumes", _list("persistentvolumes", namespaced=False)),
    ("cluster", "storage.k8s.io", "storageclasses", "list"): (
        "diagnosis: storage classes", _list("storageclasses", "storage", namespaced=False)),
}


def _shipped_grants() -> set[tuple[str, str, str, str]]:
    shipped = rbac.shipped(RBAC_FILE.read_text(), "k8s-runbooks")
    return {("namespaced", *g) for g in shipped.namespaced} | {("cluster", *g) for g in shipped.cluster}


def test_every_shipped_grant_has_a_probe() -> None:
    assert set(PROBES) == _shipped_grants()


def test_the_diagnosis_reads_everything_it_looks_at_under_the_shipped_rules(target: tuple[Sandbox, str]) -> None:
    """As the runbooks' ServiceAccount, the diagnosis engine's live evidence has no 'not readable' note."""
    box, ns = target
    assert box.state_dir is not None
    reset_clients()
    evidence = collect(ns, settings=Settings(kubeconfig=account_kubeconfig_path(box.state_dir)), metrics=False)
    assert evidence.pods and not [n for n in evidence.notes if "not readable" in n], evidence.notes


def _without(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            others = [r for r in rule["resources"] if r != resource]
            if others:
                out.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                out.append({**rule, "resources": [resource], "verbs": verbs})
        else:
            out.append(rule)
    return out


def _expire(box: Sandbox, ns: str) -> None:
    """As the admin: an expired cooldown Lease on `expired`, for the probe that updates one."""
    kube, name = get_kube(Settings(kubeconfig=box.kubeconfig)), cooldown_lease_name("Deployment", "expired")
    leases.write(kube, ns, leases.read(kube, ns, name), {"metadata": {"name": name, "namespace": ns},
                                                         "spec": {"holderIdentity": "old", "acquireTime": "2020-01-01T00:00:00.000000Z"}})


@pytest.fixture(scope="module")
def target(sandbox_only: Sandbox) -> Iterator[tuple[Sandbox, str]]:
    box = sandbox_only
    ns = f"rules-{secrets.token_hex(3)}"
    ensure_workload(box.kubeconfig, ns, {APP: 2})  # grants the shipped Role there, as for any target namespace
    try:
        wait_ready(box.kubeconfig, ns, [APP], timeout_s=120)
        yield box, ns
    finally:
        k8s.CoreV1Api(k8s_config.new_client_from_config(str(box.kubeconfig))).delete_namespace(ns)


@pytest.mark.parametrize("grant", sorted(PROBES), ids=lambda g: f"{g[0]}:{g[1] or 'core'}/{g[2]}:{g[3]}")
def test_each_rule_is_needed(target: tuple[Sandbox, str], grant: tuple[str, str, str, str]) -> None:
    box, ns = target
    scope, group, resource, verb = grant
    what, probe = PROBES[grant]
    admin = k8s_config.new_client_from_config(str(box.kubeconfig))
    core, rbac_api = k8s.CoreV1Api(admin), k8s.RbacAuthorizationV1Api(admin)
    pods = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"app={APP}").items
            if not p.metadata.deletion_timestamp]
    assert box.state_dir is not None
    settings = Settings(kubeconfig=account_kubeconfig_path(box.state_dir), state_dir=Path(box.state_dir) / "rules")
    reset_clients()
    probe_ctx = Probe(settings, get_kube(settings), ns, pods[0])
    _expire(box, ns)
    probe(probe_ctx)  # under the shipped rules: works

    if scope == "cluster":
        [doc] = [d for d in shipped_rbac() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "k8s-runbooks-read"]
        rbac_api.replace_cluster_role(doc["metadata"]["name"], {**doc, "rules": _without(doc["rules"], group, resource, verb)})
    else:
        [doc] = [d for d in shipped_rbac() if d["kind"] == "Role" and d["metadata"]["name"] == "k8s-runbooks"]
        rbac_api.replace_namespaced_role("k8s-runbooks", ns, {**doc, "metadata": {**doc["metadata"], "namespace": ns},
                                                              "rules": _without(doc["rules"], group, resource, verb)})
    try:
        _expire(box, ns)
        with pytest.raises(Forbidden) as denied:
            probe(probe_ctx)
        res = resource.split("/")[0]
        subject = f"{res}.{group}" if group else res
        assert f'is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot {verb} resource "{resource}" ' \
               f'in API group "{group}"' in str(denied.value) and subject in str(denied.value), (what, str(denied.value))
    finally:
        if scope == "cluster":
            rbac_api.replace_cluster_role(doc["metadata"]["name"], doc)
        else:
            grant_namespace(box.kubeconfig, ns)
        reset_clients()
