"""The default-scheduler of the sandbox: kube-scheduler's filters, in its order, with its messages.

PreFilter: VolumeBinding (a missing claim, or an unbound claim of an Immediate class, fails every node).
Filters, first failure per node wins: NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and
required node affinity), NodeResourcesFit (pods, cpu, memory requests against allocatable), InterPodAffinity
(required pod affinity and anti-affinity, and existing pods' anti-affinity). A pod nothing fits stays Pending
with `PodScheduled=False` and a `FailedScheduling` event worded like kube-scheduler's FitError:

    0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}.
    preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not
    helpful for scheduling.

Unschedulable pods are retried with back-off (1 s doubling to 10 s), and at once when nodes, claims or
volumes change or a pod goes away, as the scheduling queue moves them on cluster events.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from k8s_runbooks.sandbox import quantity
from k8s_runbooks.sandbox.admission import pod_requests
from k8s_runbooks.sandbox.nodes import UNSCHEDULABLE_TAINT, tolerates
from k8s_runbooks.sandbox.selectors import parse_label_selector
from k8s_runbooks.sandbox.store import Obj, Store, WatchEvent, now_iso

UNRESOLVABLE, UNSCHEDULABLE = "UnschedulableAndUnresolvable", "Unschedulable"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
BACKOFF_START, BACKOFF_MAX = 1.0, 10.0


@dataclass
class NodeInfo:
    node: Obj
    cpu: Fraction = Fraction(0)
    memory: Fraction = Fraction(0)
    pods: list[Obj] = field(default_factory=list)
    owners: Counter[str] = field(default_factory=Counter)  # pods per controller uid (spreading)
    anti: list[Obj] = field(default_factory=list)  # pods with required anti-affinity (rare: checked one by one)
    _allocatable: dict[str, Fraction] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node["metadata"]["name"]

    @property
    def labels(self) -> dict[str, str]:
        return self.node["metadata"].get("labels") or {}

    def allocatable(self, resource: str) -> Fraction:
        if resource not in self._allocatable:
            value = ((self.node.get("status") or {}).get("allocatable") or {}).get(resource)
            parsed = quantity.try_parse(value)
            self._allocatable[resource] = parsed if parsed is not None else Fraction(0)
        return self._allocatable[resource]

    def add(self, pod: Obj, requests: tuple[Fraction, Fraction]) -> None:
        self.cpu += requests[0]
        self.memory += requests[1]
        self.pods.append(pod)
        self.owners[_owner_uid(pod) or ""] += 1
        if _terms(pod, "podAntiAffinity"):
            self.anti.append(pod)


def _owner_uid(pod: Obj) -> str | None:
    return next((r.get("uid") for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


# ------------------------------------------------------------------------------------------ matching
def _expr_matches(expr: Obj, value: str | None, present: bool) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            return int(value or "") > int(values[0]) if op == "Gt" else int(value or "") < int(values[0])
        except ValueError:
            return False
    return False


def node_affinity_matches(pod: Obj, node: Obj) -> bool:
    """spec.nodeSelector AND the required node affinity (its terms are ORed, expressions ANDed)."""
    labels = node["metadata"].get("labels") or {}
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in terms:
        exprs, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing
        if all(_expr_matches(e, labels.get(e.get("key", "")), e.get("key", "") in labels) for e in exprs) and \
                all(_expr_matches(e, fields.get(e.get("key", "")), e.get("key", "") in fields) for e in field_exprs):
            return True
    return False


def label_selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector; a missing selector matches nothing (as in affinity terms)."""
    if selector is None:
        return False
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        values = ",".join(e.get("values") or [])
        parts.append({"In": f"{e['key']} in ({values})", "NotIn": f"{e['key']} notin ({values})",
                      "Exists": e["key"], "DoesNotExist": f"!{e['key']}"}.get(e.get("operator"), e["key"]))
    return parse_label_selector(",".join(parts))(labels)


def _terms(pod: Obj, kind: str) -> list[Obj]:
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return list(aff.get("requiredDuringSchedulingIgnoredDuringExecution") or [])


def _term_covers(term: Obj, owner: Obj, other: Obj) -> bool:
    """Does `term` (of `owner`) select the pod `other`? No namespaces and no namespaceSelector: the owner's
    namespace; an empty namespaceSelector: every namespace; one naming kubernetes.io/metadata.name: that one."""
    names, ns_selector = term.get("namespaces") or [], term.get("namespaceSelector")
    other_ns = other["metadata"].get("namespace")
    if not names and ns_selector is None:
        in_scope = other_ns == owner["metadata"].get("namespace")
    else:
        by_name = (ns_selector or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        in_scope = other_ns in names or (ns_selector is not None and (by_name is None or by_name == other_ns))
    return in_scope and label_selector_matches(term.get("labelSelector"), other["metadata"].get("labels") or {})


# ------------------------------------------------------------------------------------------ the scheduler
class Scheduler:
    def __init__(self, store: Store, informer: Any, recorder: Any) -> None:
        self.store = store
        self.cache = informer
        self.recorder = recorder
        self._snapshot: dict[str, NodeInfo] | None = None
        self._backoff: dict[str, tuple[float, float]] = {}  # pod uid -> (next attempt, delay)
        self._requests: dict[str, tuple[Fraction, Fraction]] = {}  # pod uid -> (cpu, memory): pod specs are immutable

    # -------------------------------------------------------------------------------- queue plumbing
    def begin_batch(self) -> None:
        """A fresh view of the nodes for the next batch of pods (the cache within one batch is kept current
        by our own bindings)."""
        self._snapshot = None

    def keys_for(self, ev: WatchEvent) -> list[tuple[str, str, str]]:
        if ev.resource == "pods" and ev.type == "DELETED":
            self._backoff.pop(ev.object["metadata"].get("uid", ""), None)
            self._requests.pop(ev.object["metadata"].get("uid", ""), None)
        moves = ev.resource in ("nodes", "persistentvolumeclaims", "persistentvolumes", "storageclasses") or (
            ev.resource == "pods" and (ev.type == "DELETED" or ev.object["metadata"].get("deletionTimestamp")))
        if moves and self._backoff:
            # Called under the store lock: only mark; the next resync (every unscheduled pod) retries them.
            self._backoff = {uid: (0.0, delay) for uid, (_, delay) in self._backoff.items()}
        return []

    def all_keys(self) -> list[tuple[str, str, str]]:
        return []  # the controllers' resync already offers every unscheduled pod

    def handle(self, kind: str, ns: str, name: str) -> bool:
        return False  # "pod" keys go to schedule()

    def _due(self, pod: Obj) -> bool:
        entry = self._backoff.get(pod["metadata"]["uid"])
        return entry is None or time.monotonic() >= entry[0]

    def _failed(self, pod: Obj) -> None:
        _, delay = self._backoff.get(pod["metadata"]["uid"], (0.0, 0.0))
        delay = min(max(delay * 2, BACKOFF_START), BACKOFF_MAX)
        self._backoff[pod["metadata"]["uid"]] = (time.monotonic() + delay, delay)

    # -------------------------------------------------------------------------------- snapshot
    def _nodes(self) -> dict[str, NodeInfo]:
        if self._snapshot is None:
            infos = {n["metadata"]["name"]: NodeInfo(n) for n in self.cache.list("nodes")}
            for p in self.cache.list("pods"):
                node = (p.get("spec") or {}).get("nodeName")
                if node in infos and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    infos[node].add(p, self._pod_requests(p))
            self._snapshot = infos
        return self._snapshot

    def _pod_requests(self, pod: Obj) -> tuple[Fraction, Fraction]:
        uid = pod["metadata"]["uid"]
        cached = self._requests.get(uid)
        if cached is None:
            req, _ = pod_requests(pod)
            cached = self._requests[uid] = (req.get("cpu", Fraction(0)), req.get("memory", Fraction(0)))
        return cached

    # -------------------------------------------------------------------------------- one pod
    def schedule(self, ns: str, name: str) -> None:
        pod = self.store.try_get("pods", ns, name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        if (pod.get("spec") or {}).get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        if not self._due(pod):
            return
        infos = self._nodes()
        message, chosen, waiting_claims = self.find_node(pod, infos)
        if chosen is None:
            self._failed(pod)
            self._unschedulable(pod, message)
            return
        if waiting_claims:
            self._select_for_claims(ns, waiting_claims, chosen.name)
            self._failed(pod)  # bound once the claims are (a claim event moves the pod back at once)
            return
        self._backoff.pop(pod["metadata"]["uid"], None)
        self._bind(pod, chosen)

    def find_node(self, pod: Obj, infos: dict[str, NodeInfo]) -> tuple[str, NodeInfo | None, list[Obj]]:
        """(FitError message, the chosen node, claims waiting for their first consumer)."""
        if not infos:
            return "no nodes available to schedule pods", None, []
        total = len(infos)
        pre, waiting = self._volume_prefilter(pod)
        if pre:
            return self._fit_error(total, pre, Counter(), {n: UNRESOLVABLE for n in infos}, pod), None, []
        reasons: Counter[str] = Counter()
        codes: dict[str, str] = {}
        feasible: list[NodeInfo] = []
        for info in sorted(infos.values(), key=lambda i: i.name):
            code, why = self._filter(pod, info, infos)
            if code is None:
                feasible.append(info)
            else:
                codes[info.name] = code
                for reason in why:
                    reasons[reason] += 1
        if not feasible:
            return self._fit_error(total, "", reasons, codes, pod), None, []
        return "", min(feasible, key=lambda i: self._score(pod, i)), waiting

    @staticmethod
    def _fit_error(total: int, prefilter: str, reasons: Counter[str], codes: dict[str, str], pod: Obj) -> str:
        head = f"0/{total} nodes are available:"
        if prefilter:
            head += f" {prefilter}."
        else:
            head += " " + ", ".join(sorted(f"{n} {r}" for r, n in reasons.items())) + "."
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            return head + " preemption: not eligible due to preemptionPolicy=Never."
        post = Counter(NOT_HELPFUL if c == UNRESOLVABLE else NO_VICTIMS for c in codes.values())
        return head + f" preemption: 0/{total} nodes are available: " + \
            ", ".join(sorted(f"{n} {r}" for r, n in post.items())) + "."

    # -------------------------------------------------------------------------------- prefilter
    def _volume_prefilter(self, pod: Obj) -> tuple[str, list[Obj]]:
        ns = pod["metadata"]["namespace"]
        waiting: list[Obj] = []
        unbound_immediate = False
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            claim_name = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim_name:
                continue
            pvc = self.cache.get("persistentvolumeclaims", ns, claim_name)
            if pvc is None:
                return f'persistentvolumeclaim "{claim_name}" not found', []
            if pvc["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{claim_name}" is being deleted', []
            if (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            sc_name = (pvc.get("spec") or {}).get("storageClassName")
            sc = self.cache.get("storageclasses", "", sc_name) if sc_name else None
            if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
                waiting.append(pvc)
            else:
                unbound_immediate = True
        if unbound_immediate:
            return "pod has unbound immediate PersistentVolumeClaims", []
        return "", waiting

    # -------------------------------------------------------------------------------- filters
    def _filter(self, pod: Obj, info: NodeInfo, infos: dict[str, NodeInfo]) -> tuple[str | None, list[str]]:
        spec = pod.get("spec") or {}
        tolerations = spec.get("tolerations") or []
        node_spec = info.node.get("spec") or {}
        if node_spec.get("unschedulable") and not tolerates(
                tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}):
            return UNRESOLVABLE, ["node(s) were unschedulable"]
        for taint in node_spec.get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
                return UNRESOLVABLE, [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
        if not node_affinity_matches(pod, info.node):
            return UNRESOLVABLE, ["node(s) didn't match Pod's node affinity/selector"]
        insufficient = self._fits(info, self._pod_requests(pod))
        if insufficient:
            return UNSCHEDULABLE, insufficient
        return self._inter_pod(pod, info, infos)

    @staticmethod
    def _fits(info: NodeInfo, requests: tuple[Fraction, Fraction]) -> list[str]:
        out = []
        if len(info.pods) + 1 > info.allocatable("pods"):
            out.append("Too many pods")
        cpu, mem = requests
        if cpu and info.cpu + cpu > info.allocatable("cpu"):
            out.append("Insufficient cpu")
        if mem and info.memory + mem > info.allocatable("memory"):
            out.append("Insufficient memory")
        return out

    @staticmethod
    def _inter_pod(pod: Obj, info: NodeInfo, infos: dict[str, NodeInfo]) -> tuple[str | None, list[str]]:
        def same_domain(key: str) -> list[Obj]:
            value = info.labels.get(key)
            if value is None:
                return []
            return [p for i in infos.values() if i.labels.get(key) == value for p in i.pods]

        affinity = _terms(pod, "podAffinity")
        for term in affinity:
            if not any(_term_covers(term, pod, p) for p in same_domain(term.get("topologyKey", ""))):
                anywhere = any(_term_covers(term, pod, p) for i in infos.values() for p in i.pods)
                # The first pod of a group that selects itself may go anywhere.
                if anywhere or not _term_covers(term, pod, pod) or term.get("topologyKey", "") not in info.labels:
                    return UNRESOLVABLE, ["node(s) didn't match pod affinity rules"]
        for term in _terms(pod, "podAntiAffinity"):
            if any(_term_covers(term, pod, p) for p in same_domain(term.get("topologyKey", ""))):
                return UNSCHEDULABLE, ["node(s) didn't match pod anti-affinity rules"]
        for other_info in infos.values():
            for other in other_info.anti:
                for term in _terms(other, "podAntiAffinity"):
                    key = term.get("topologyKey", "")
                    if key in info.labels and other_info.labels.get(key) == info.labels.get(key) \
                            and _term_covers(term, other, pod):
                        return UNSCHEDULABLE, ["node(s) didn't satisfy existing pods anti-affinity rules"]
        return None, []

    @staticmethod
    def _score(pod: Obj, info: NodeInfo) -> tuple[Any, ...]:
        """Lower is better: spread a workload's replicas (pods of the same controller), then the least
        allocated node."""
        owner = _owner_uid(pod)
        siblings = info.owners[owner] if owner else 0
        cpu, mem = info.allocatable("cpu"), info.allocatable("memory")
        used = (info.cpu / cpu if cpu else 0) + (info.memory / mem if mem else 0)
        return siblings, used, len(info.pods), info.name

    # -------------------------------------------------------------------------------- outcomes
    def _unschedulable(self, pod: Obj, message: str) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]

        def cond(p: Obj) -> None:
            st = p.setdefault("status", {})
            st.setdefault("phase", "Pending")
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            prev = next((c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
            since = prev.get("lastTransitionTime") if prev.get("status") == "False" else now_iso()
            conds.insert(0, {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                             "lastTransitionTime": since, "reason": "Unschedulable", "message": message})
            st["conditions"] = conds
        self.store.mutate("pods", ns, name, cond, subresource="status")
        self.recorder.record(pod, "Warning", "FailedScheduling", message, component="default-scheduler")

    def _select_for_claims(self, ns: str, claims: list[Obj], node: str) -> None:
        for pvc in claims:
            if (pvc["metadata"].get("annotations") or {}).get(SELECTED_NODE) != node:
                def fn(o: Obj) -> None:
                    o["metadata"].setdefault("annotations", {})[SELECTED_NODE] = node
                self.store.mutate("persistentvolumeclaims", ns, pvc["metadata"]["name"], fn)

    def _bind(self, pod: Obj, info: NodeInfo) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]

        def bind(p: Obj) -> None:
            p["spec"]["nodeName"] = info.name
        bound = self.store.mutate("pods", ns, name, bind)
        info.add(bound, self._pod_requests(bound))

        def cond(p: Obj) -> None:
            st = p.setdefault("status", {})
            st.setdefault("phase", "Pending")
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.insert(0, {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                             "lastTransitionTime": now_iso()})
            st["conditions"] = conds
        self.store.mutate("pods", ns, name, cond, subresource="status")
        self.recorder.record(bound, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {info.name}",
                             component="default-scheduler")
