"""`plan(hypotheses) -> steps`: the fix table. Each cause maps to the action that fixes it (carried out through
the guard) or to an escalation stating the exact change a person should make. Restarts, pod deletions and
scaling are never proposed for a cause they cannot fix; a template mistake that arrived with the newest
revision is rolled back (the one action that restores the last working template as a whole)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

from k8s_runbooks.diagnosis.evidence import ObjectRef
from k8s_runbooks.diagnosis.hypothesis import Cause, Escalation, Hypothesis, PlanStep
from k8s_runbooks.diagnosis.quantity import fmt_bytes, fmt_cpu, parse_quantity
from k8s_runbooks.models import Action, ActionKind, WorkloadRef

MEMORY_LIMIT_CAP = 8 * 2**30  # never raise a memory limit past 8 GiB automatically
CPU_LIMIT_CAP = 4.0

# Causes that live in the pod template: when the newest revision brought them, rolling back fixes them.
TEMPLATE_CAUSES = frozenset({
    Cause.node_selector_unsatisfiable, Cause.node_affinity_unsatisfiable, Cause.anti_affinity_unsatisfiable,
    Cause.taint_not_tolerated, Cause.insufficient_cpu, Cause.insufficient_memory, Cause.image_not_found,
    Cause.registry_unresolvable, Cause.image_pull_unauthorized, Cause.secret_missing, Cause.config_map_missing,
    Cause.service_account_missing, Cause.liveness_probe_wrong_port, Cause.liveness_probe_wrong_protocol,
    Cause.liveness_probe_too_aggressive, Cause.readiness_probe_wrong_port, Cause.readiness_probe_wrong_protocol,
    Cause.env_address_wrong, Cause.dns_resolution_failed, Cause.crash_after_rollout, Cause.slow_revision,
    Cause.sidecar_port_conflict, Cause.volume_permission_denied,
    # Out of memory right after a new revision: the new code needs more memory (or leaks); the revision that
    # ran within the limit is the fix. With no new revision, the limit is raised instead (`_oom`).
    Cause.oom_killed,
})


def _kubectl(*args: str) -> str:
    return "kubectl " + " ".join(shlex.quote(a) for a in args)


def _ns(h: Hypothesis) -> str:
    return h.object.namespace or h.details.get("namespace", "default")


def _deployment(h: Hypothesis) -> WorkloadRef | None:
    if h.object.kind != "Deployment" or not h.object.namespace:
        return None
    return WorkloadRef(namespace=h.object.namespace, name=h.object.name)


def _escalate(h: Hypothesis, summary: str, change: str, missing: tuple[str, str] | None = None) -> PlanStep:
    obj = ObjectRef(kind=missing[0], name=missing[1], namespace=_ns(h) if missing[0] not in ("Node", "StorageClass") else None) if missing else None
    return PlanStep(cause=h.cause, object=h.object, confidence=h.confidence,
                    escalation=Escalation(summary=summary, change=change, missing_object=obj), reason=h.summary)


def _act(h: Hypothesis, action: Action) -> PlanStep:
    return PlanStep(cause=h.cause, object=h.object, confidence=h.confidence, action=action, reason=h.summary)


def _patch(kind: str, name: str, ns: str, patch: object, kind_flag: str = "merge") -> str:
    return _kubectl("patch", kind, name, "-n", ns, "--type", kind_flag, "-p", json.dumps(patch, separators=(",", ":")))


# ------------------------------------------------------------------------------------ per cause
def _quota(h: Hypothesis) -> PlanStep:
    q = h.details.get("quota", "<quota>")
    return _escalate(h, f"ResourceQuota {q} blocks the workload; raise it or lower what the workload requests",
                     f"{_kubectl('describe', 'resourcequota', q, '-n', _ns(h))}  # then raise the exhausted item, e.g.\n"
                     + _patch("resourcequota", q, _ns(h), {"spec": {"hard": {h.details.get("requested", "<resource>").split("=", 1)[0]: "<new limit>"}}}))


def _service_account(h: Hypothesis) -> PlanStep:
    sa = h.details.get("service_account", "<name>")
    return _escalate(h, f"create the ServiceAccount {sa} (or point the template at an existing one)",
                     _kubectl("create", "serviceaccount", sa, "-n", _ns(h)), ("ServiceAccount", sa))


def _placement(h: Hypothesis) -> PlanStep:
    d, ns = h.object.name, _ns(h)
    if h.cause is Cause.node_selector_unsatisfiable:
        keys = [kv.split("=", 1)[0] for kv in h.details.get("node_selector", "").split(",") if kv]
        change = _patch("deployment", d, ns, [{"op": "remove", "path": f"/spec/template/spec/nodeSelector/{k.replace('/', '~1')}"} for k in keys] or
                        [{"op": "remove", "path": "/spec/template/spec/nodeSelector"}], "json")
        return _escalate(h, "no node carries the labels the nodeSelector asks for: drop the selector (or label a node)", change)
    if h.cause is Cause.node_affinity_unsatisfiable:
        return _escalate(h, "no node satisfies the required node affinity: relax it", _patch(
            "deployment", d, ns, [{"op": "remove", "path": "/spec/template/spec/affinity/nodeAffinity"}], "json"))
    if h.cause is Cause.anti_affinity_unsatisfiable:
        return _escalate(h, "the required pod anti-affinity allows fewer pods than replicas: make it preferred or lower replicas",
                         _patch("deployment", d, ns, [{"op": "remove", "path": "/spec/template/spec/affinity/podAntiAffinity"}], "json"))
    if h.cause is Cause.taint_not_tolerated:
        taints = h.details.get("taints", "")
        node, _, taint = taints.split(";", 1)[0].partition("=")
        return _escalate(h, f"the candidate nodes are tainted ({taints or 'see facts'}): remove the taint if it is a mistake, "
                         "or add a toleration to the workload", _kubectl("taint", "nodes", node or "<node>", (taint or "<key>:<effect>") + "-"))
    if h.cause is Cause.nodes_cordoned:
        nodes = [n for n in h.details.get("nodes", "").split(",") if n] or ["<node>"]
        return _escalate(h, "the nodes this workload may use are cordoned: uncordon them once their maintenance is over",
                         "\n".join(_kubectl("uncordon", n) for n in nodes))
    res = h.details.get("resource", "cpu")
    return _escalate(h, f"the pods request more {res} than any node offers: lower the request", _kubectl(
        "set", "resources", f"deployment/{d}", "-n", ns, f"--requests={res}=<at most the largest node's allocatable>"))


def _claim(h: Hypothesis) -> PlanStep:
    claim, ns = h.details.get("claim", "<claim>"), _ns(h)
    what = {Cause.volume_claimed_by_other: f"the volume is bound to another claim: give {claim} its own PersistentVolume",
            Cause.claim_selector_unmatched: f"no PersistentVolume carries the labels {claim} selects: fix the selector or the volume labels",
            Cause.storage_class_missing: f"{claim} asks for a StorageClass that does not exist: use an existing class",
            Cause.claim_capacity_unavailable: f"no PersistentVolume is large enough for {claim}: lower the request or add a volume",
            Cause.claim_access_mode_unavailable: f"no PersistentVolume offers the access mode {claim} needs"}[h.cause]
    missing = ("StorageClass", h.details["storage_class"]) if h.cause is Cause.storage_class_missing and h.details.get("storage_class") else None
    # A PVC's spec is immutable once created: the fix is a corrected claim (delete and re-create), by a person.
    return _escalate(h, what, f"{_kubectl('get', 'pvc', claim, '-n', ns, '-o', 'yaml')} > {claim}.yaml  # fix spec, then\n"
                     f"{_kubectl('delete', 'pvc', claim, '-n', ns)} && {_kubectl('apply', '-f', f'{claim}.yaml')}", missing)


def _image(h: Hypothesis) -> PlanStep:
    image, ns, d = h.details.get("image", "<image>"), _ns(h), h.object.name
    if h.cause is Cause.image_pull_unauthorized:
        secret = h.details.get("pull_secret") or "regcred"
        return _escalate(h, f"the registry needs credentials for {image}: create the pull secret and reference it",
                         _kubectl("create", "secret", "docker-registry", secret, "-n", ns, "--docker-server=" + h.details.get("registry", "<registry>"),
                                  "--docker-username=<user>", "--docker-password=<token>") + "\n" +
                         _patch("deployment", d, ns, {"spec": {"template": {"spec": {"imagePullSecrets": [{"name": secret}]}}}}),
                         ("Secret", secret))
    what = "the registry host does not resolve" if h.cause is Cause.registry_unresolvable else "the image does not exist"
    return _escalate(h, f"{what}: set the image to a reference that exists", _kubectl(
        "set", "image", f"deployment/{d}", "-n", ns, f"{h.details.get('container', '<container>')}=<a valid image>"))


def _config(h: Hypothesis) -> PlanStep:
    ns = _ns(h)
    if h.cause is Cause.config_map_missing:
        name = h.details.get("config_map", "<name>")
        return _escalate(h, f"create the ConfigMap {name} the pods reference", _kubectl("create", "configmap", name, "-n", ns, "--from-literal=<key>=<value>"),
                         ("ConfigMap", name))
    name = h.details.get("secret", "<name>")
    key = h.details.get("key") or "<key>"
    return _escalate(h, f"create the Secret {name} the pods reference (key {key})",
                     _kubectl("create", "secret", "generic", name, "-n", ns, f"--from-literal={key}=<value>"), ("Secret", name))


def _oom(h: Hypothesis) -> PlanStep:
    dep = _deployment(h)
    limit = parse_quantity(h.details.get("memory_limit"))
    if dep is None or not limit:
        return _escalate(h, "the container exceeds its memory limit: raise the limit or fix the leak", _kubectl(
            "set", "resources", f"{h.object.kind.lower()}/{h.object.name}", "-n", _ns(h), "--limits=memory=<larger>"))
    new = min(max(limit * 2, 64 * 2**20), MEMORY_LIMIT_CAP)
    if new <= limit:
        return _escalate(h, f"the memory limit is already {fmt_bytes(limit)} (the automatic cap): find the leak",
                         _kubectl("top", "pod", "-n", _ns(h), "-l", f"app={h.object.name}", "--containers"))
    container = h.details.get("container") or h.object.name
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "resources": {"limits": {"memory": fmt_bytes(new)}}}]}}}}
    return _act(h, Action(kind=ActionKind.patch_resources, target=dep, patch=patch, evidence_score=h.confidence,
                          reason=f"raise the memory limit {fmt_bytes(limit)} -> {fmt_bytes(new)} (OOMKilled)"))


def _cpu(h: Hypothesis) -> PlanStep:
    dep = _deployment(h)
    limit = parse_quantity(h.details.get("cpu_limit"))
    if dep is None or not limit:
        return _escalate(h, "the service is CPU-starved: raise its CPU limit or scale it out", _kubectl(
            "set", "resources", f"{h.object.kind.lower()}/{h.object.name}", "-n", _ns(h), "--limits=cpu=<larger>"))
    new = min(limit * 2, CPU_LIMIT_CAP)
    if new <= limit:
        return _escalate(h, "the CPU limit is already at the automatic cap: scale out or profile", _kubectl("top", "pod", "-n", _ns(h)))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": h.details.get("container") or h.object.name,
                                                             "resources": {"limits": {"cpu": fmt_cpu(new)}}}]}}}}
    return _act(h, Action(kind=ActionKind.patch_resources, target=dep, patch=patch, evidence_score=h.confidence,
                          reason=f"raise the CPU limit {fmt_cpu(limit)} -> {fmt_cpu(new)} (throttled)"))


def _probe(h: Hypothesis) -> PlanStep:
    kind = h.details.get("probe", "liveness")
    field = f"{kind}Probe"
    container = h.details.get("container") or "<container>"
    if h.cause in (Cause.liveness_probe_wrong_port, Cause.readiness_probe_wrong_port):
        right = h.details.get("right_port") or "<container port>"
        return _escalate(h, f"point the {kind} probe at the port the container listens on ({right})",
                         _patch("deployment", h.object.name, _ns(h), {"spec": {"template": {"spec": {"containers": [
                             {"name": container, field: {"tcpSocket": {"port": int(right) if right.isdigit() else right}}}]}}}}, "strategic"))
    if h.cause is Cause.liveness_probe_too_aggressive:
        return _escalate(h, "give the container time: a longer initial delay, period and failure threshold", _patch(
            "deployment", h.object.name, _ns(h), {"spec": {"template": {"spec": {"containers": [{"name": container, field: {
                "initialDelaySeconds": 15, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}}]}}}}, "strategic"))
    return _escalate(h, f"the {kind} probe speaks the wrong protocol: use the one the port serves (e.g. grpc instead of httpGet)",
                     _kubectl("edit", f"deployment/{h.object.name}", "-n", _ns(h)) + f"  # containers[{container}].{field}")


def _routing(h: Hypothesis) -> PlanStep:
    svc, ns = h.details.get("service", h.object.name), _ns(h)
    if h.cause is Cause.service_selects_no_pods:
        labels = dict(kv.split("=", 1) for kv in h.details.get("labels", "").split(",") if "=" in kv)
        selector = {k: v for k, v in labels.items() if k not in ("pod-template-hash",)} or {"app": h.object.name}
        return _escalate(h, f"Service {svc} selects no pods: set its selector to the pods' labels",
                         _patch("service", svc, ns, {"spec": {"selector": selector}}, "merge"))
    if h.cause is Cause.service_target_port_wrong:
        right = h.details.get("right_port", "<container port>")
        return _escalate(h, f"Service {svc} forwards to a port nothing listens on: target {right}", _patch(
            "service", svc, ns, [{"op": "replace", "path": "/spec/ports/0/targetPort", "value": int(right) if right.isdigit() else right}], "json"))
    if h.cause is Cause.service_protocol_wrong:
        return _escalate(h, f"Service {svc} uses {h.details.get('protocol')} where the pods serve {h.details.get('right_protocol', 'TCP')}",
                         _patch("service", svc, ns, [{"op": "replace", "path": "/spec/ports/0/protocol",
                                                      "value": h.details.get("right_protocol", "TCP")}], "json"))
    if h.cause is Cause.env_address_wrong:
        var, value = h.details.get("variable", "<VAR>"), h.details.get("suggestion") or "<service>:<port>"
        return _escalate(h, f"{var} names an address no Service answers: point it at {value}",
                         _kubectl("set", "env", f"deployment/{h.object.name}", "-n", ns, f"{var}={value}"))
    if h.cause is Cause.gateway_route_wrong:
        return _escalate(h, f"the gateway route {h.details.get('route', '')} sends traffic to {h.details.get('target', 'the wrong service')}: "
                         f"point it at {h.details.get('right_target', h.object.name)}",
                         _kubectl("edit", h.details.get("source", "configmap/<gateway config>").split(" ", 1)[0], "-n", ns)
                         + "  # then restart the gateway to reload its routes")
    return _escalate(h, "the pods cannot resolve names: restore the cluster DNS policy", _patch(
        "deployment", h.object.name, ns, {"spec": {"template": {"spec": {"dnsPolicy": "ClusterFirst", "dnsConfig": None}}}}))


def _database(h: Hypothesis) -> PlanStep:
    ns, name = _ns(h), h.object.name
    text = {Cause.db_auth_failed: (f"{name}'s database credentials are refused: correct the user/password in its Secret",
                                   _kubectl("get", f"deployment/{name}", "-n", ns, "-o", "jsonpath={..envFrom}") + "  # then fix that Secret"),
            Cause.db_wrong_port: (f"{name} dials a database port nothing listens on: correct the port in its configuration",
                                  _kubectl("get", f"deployment/{name}", "-n", ns, "-o", "jsonpath={..envFrom}") + "  # then fix the *_PORT value"),
            Cause.db_read_only: (f"the database {name} is read-only: turn read_only off on the primary",
                                 _kubectl("exec", "-n", ns, f"{name}-0", "--", "mysql", "-e", "SET GLOBAL super_read_only=OFF; SET GLOBAL read_only=OFF;")),
            Cause.db_connections_exhausted: (f"the database {name} has no connections left: raise max_connections or fix the leaking client",
                                             _kubectl("exec", "-n", ns, f"{name}-0", "--", "mysql", "-e", "SHOW PROCESSLIST; SET GLOBAL max_connections=500;")),
            Cause.sidecar_port_conflict: (f"two containers of {name}'s pods bind the same port: move one of them",
                                          _kubectl("get", f"deployment/{name}", "-n", ns, "-o", "jsonpath={..ports}")),
            Cause.volume_permission_denied: (f"{name} may not read its volume: set fsGroup / runAsUser to the owner of the files",
                                             _patch("deployment", name, ns, {"spec": {"template": {"spec": {"securityContext": {"fsGroup": 1000}}}}}))}
    summary, change = text[h.cause]
    return _escalate(h, summary, change)


def _zero(h: Hypothesis) -> PlanStep:
    dep = _deployment(h)
    if dep is None:
        return _escalate(h, "scale the workload back up", _kubectl("scale", f"{h.object.kind.lower()}/{h.object.name}", "-n", _ns(h), "--replicas=1"))
    replicas = int(h.details.get("replicas") or 1)
    return _act(h, Action(kind=ActionKind.scale, target=dep, replicas=max(1, replicas), evidence_score=h.confidence,
                          reason=f"{h.object.name} has zero replicas: scale back to {max(1, replicas)}"))


def _infra(h: Hypothesis) -> PlanStep:
    node = h.details.get("node", h.object.name)
    component = {Cause.kubelet_down: "kubelet", Cause.container_runtime_down: "containerd", Cause.kube_proxy_down: "kube-proxy",
                 Cause.scheduler_down: "kube-scheduler"}.get(h.cause)
    if component:
        return _escalate(h, f"restart {component} on {node} (and find why it stopped: journalctl -u {component})",
                         f"ssh {node} sudo systemctl restart {component}")
    if h.cause is Cause.node_not_ready:
        return _escalate(h, f"{node} is NotReady: check the kubelet, then drain it if it does not recover", _kubectl("drain", node, "--ignore-daemonsets"))
    return _escalate(h, f"{node}'s network is degraded: move workloads off it while the network is investigated",
                     _kubectl("cordon", node) + "\n" + _kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data"))


def _network(h: Hypothesis) -> PlanStep:
    return _escalate(h, f"requests to {h.object.name} are delayed on the network path of its pods: check NetworkPolicies, "
                     "sidecars and traffic shaping on its pods", _kubectl("get", "pods", "-n", _ns(h), "-l", f"app={h.object.name}", "-o", "wide"))


def _slow_pods(h: Hypothesis) -> PlanStep:
    dep = _deployment(h)
    pods = [p for p in h.details.get("pods", "").split(",") if p]
    if dep is None or not pods:
        return _escalate(h, "some pods are much slower than the others: restart them", _kubectl("delete", "pod", *pods or ["<pod>"], "-n", _ns(h)))
    return _act(h, Action(kind=ActionKind.delete_pods, target=dep, pods=pods, evidence_score=h.confidence,
                          reason=f"restart the {len(pods)} outlier pod(s); the other replicas keep serving"))


def _crash(h: Hypothesis) -> PlanStep:
    return _escalate(h, f"{h.object.name} crashes on its own (exit {h.details.get('exit_code', '?')}): a restart will not fix it; "
                     "read the log line in the facts", _kubectl("logs", f"deployment/{h.object.name}", "-n", _ns(h), "--previous"))


_TABLE: dict[Cause, Callable[[Hypothesis], PlanStep]] = {
    **{c: _quota for c in (Cause.quota_cpu_exceeded, Cause.quota_memory_exceeded, Cause.quota_pods_exceeded,
                           Cause.quota_services_exceeded, Cause.quota_storage_exceeded)},
    Cause.service_account_missing: _service_account,
    **{c: _placement for c in (Cause.node_selector_unsatisfiable, Cause.node_affinity_unsatisfiable, Cause.anti_affinity_unsatisfiable,
                               Cause.taint_not_tolerated, Cause.nodes_cordoned, Cause.insufficient_cpu, Cause.insufficient_memory)},
    **{c: _claim for c in (Cause.volume_claimed_by_other, Cause.claim_selector_unmatched, Cause.storage_class_missing,
                           Cause.claim_capacity_unavailable, Cause.claim_access_mode_unavailable)},
    **{c: _image for c in (Cause.image_not_found, Cause.registry_unresolvable, Cause.image_pull_unauthorized)},
    Cause.secret_missing: _config, Cause.config_map_missing: _config,
    Cause.oom_killed: _oom, Cause.cpu_saturated: _cpu,
    **{c: _probe for c in (Cause.liveness_probe_wrong_port, Cause.liveness_probe_wrong_protocol, Cause.liveness_probe_too_aggressive,
                           Cause.readiness_probe_wrong_port, Cause.readiness_probe_wrong_protocol)},
    **{c: _routing for c in (Cause.service_selects_no_pods, Cause.service_target_port_wrong, Cause.service_protocol_wrong,
                             Cause.env_address_wrong, Cause.gateway_route_wrong, Cause.dns_resolution_failed)},
    **{c: _database for c in (Cause.db_auth_failed, Cause.db_wrong_port, Cause.db_read_only, Cause.db_connections_exhausted,
                              Cause.sidecar_port_conflict, Cause.volume_permission_denied)},
    Cause.scaled_to_zero: _zero,
    **{c: _infra for c in (Cause.kubelet_down, Cause.container_runtime_down, Cause.kube_proxy_down, Cause.scheduler_down,
                           Cause.node_not_ready, Cause.node_network_delay, Cause.node_packet_loss)},
    Cause.pod_network_delay: _network, Cause.app_crash: _crash, Cause.slow_pods: _slow_pods,
}


def _rollback(h: Hypothesis) -> PlanStep | None:
    dep = _deployment(h)
    revision = h.details.get("introduced_by_revision")
    if dep is None or not revision or h.cause not in TEMPLATE_CAUSES:
        return None
    return _act(h, Action(kind=ActionKind.rollout_undo, target=dep, evidence_score=h.confidence,
                          reason=f"{h.cause.value} arrived with revision {revision}; revision {h.details.get('previous_revision', revision + '-1')} was healthy"))


def plan_step(h: Hypothesis) -> PlanStep:
    if h.cause in (Cause.crash_after_rollout, Cause.slow_revision):
        step = _rollback(h)
        return step or _crash(h)
    return _rollback(h) or _TABLE[h.cause](h)


def plan(hypotheses: list[Hypothesis], limit: int = 3) -> list[PlanStep]:
    """One step per hypothesis (the most likely `limit`), in ranking order."""
    return [plan_step(h) for h in hypotheses[:limit]]
