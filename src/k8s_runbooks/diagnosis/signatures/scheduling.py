"""Scheduling: a pod stays Pending. kube-scheduler's `FailedScheduling` message counts the nodes each filter
rejected; which filter is the *cause* comes from replaying the filters per node: the constraint that leaves no
candidate at all is the one to change (a nodeSelector no node satisfies is the cause even when the master is
also cordoned; a selector that matches one node which is cordoned makes the cordon the cause)."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Node, Pod, PodSpec, Requirement
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis
from k8s_runbooks.diagnosis.quantity import parse_quantity
from k8s_runbooks.diagnosis.signatures import volumes

_REASONS = (
    ("cordon", re.compile(r"were unschedulable")),
    ("match", re.compile(r"didn't match Pod's node affinity/selector|didn't match node selector")),
    ("taint", re.compile(r"had untolerated taint|had taint .* that the pod didn't tolerate")),
    ("cpu", re.compile(r"Insufficient cpu")),
    ("memory", re.compile(r"Insufficient memory")),
    ("anti", re.compile(r"didn't match pod anti-affinity rules|didn't satisfy existing pods anti-affinity")),
    ("claim", re.compile(r"unbound immediate PersistentVolumeClaims|persistentvolumeclaim \"[^\"]+\" not found")),
)
_UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def parse_reasons(message: str) -> dict[str, int]:
    """{'cordon': 1, 'match': 3} from '0/4 nodes are available: 1 node(s) were unschedulable, 3 node(s) ...'."""
    body = message.split("preemption:", 1)[0]
    body = body.split("are available:", 1)[-1]
    out: dict[str, int] = {}
    for part in re.split(r",\s*(?=\d+ |pod has|persistentvolumeclaim)", body):
        m = re.match(r"\s*(\d+)\s+(.*)", part)
        count, text = (int(m.group(1)), m.group(2)) if m else (1, part)
        for name, pattern in _REASONS:
            if pattern.search(text):
                out[name] = out.get(name, 0) + count
    return out


def _req_matches(req: Requirement, labels: dict[str, str]) -> bool:
    value = labels.get(req.key)
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return req.key in labels
    if op == "DoesNotExist":
        return req.key not in labels
    if op in ("Gt", "Lt") and value is not None and req.values:
        try:
            return int(value) > int(req.values[0]) if op == "Gt" else int(value) < int(req.values[0])
        except ValueError:
            return False
    return False


def _labels(node: Node) -> dict[str, str]:
    # The kubelet always sets kubernetes.io/hostname to the node's name; a record that lost it still means it.
    return {"kubernetes.io/hostname": node.name, **node.labels}


def selector_ok(spec: PodSpec, node: Node) -> bool:
    labels = _labels(node)
    return all(labels.get(k) == v for k, v in spec.node_selector.items())


def affinity_ok(spec: PodSpec, node: Node) -> bool:
    terms = [t for t in spec.node_affinity if t]
    labels = _labels(node)
    return not terms or any(all(_req_matches(r, labels) for r in term) for term in terms)


def control_plane(node: Node) -> bool:
    """Control-plane nodes are kept free of workloads on purpose (cordoned or tainted as a rule)."""
    role = node.labels.get("kubernetes.io/role", "")
    return role in ("master", "control-plane") or any(
        k in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master") for k in node.labels)


def _tolerated(spec: PodSpec, key: str, value: str | None, effect: str) -> bool:
    for t in spec.tolerations:
        if t.effect and t.effect != effect:
            continue
        if t.operator == "Exists" and (t.key in (None, "") or t.key == key):
            return True
        if t.key == key and (t.value or "") == (value or ""):
            return True
    return False


def untolerated(spec: PodSpec, node: Node) -> list[str]:
    return [f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in node.taints
            if t.effect in ("NoSchedule", "NoExecute") and t.key != _UNSCHEDULABLE_TAINT
            and not _tolerated(spec, t.key, t.value, t.effect)]


def cordoned(spec: PodSpec, node: Node) -> bool:
    return node.unschedulable and not _tolerated(spec, _UNSCHEDULABLE_TAINT, None, "NoSchedule")


def _request(spec: PodSpec, resource: str) -> float:
    total = 0.0
    for c in spec.containers:
        q = parse_quantity(c.requests.get(resource) or c.limits.get(resource))
        total += q or 0.0
    return total


def _describe_spec(spec: PodSpec) -> str:
    parts = []
    if spec.node_selector:
        parts.append("nodeSelector " + ",".join(f"{k}={v}" for k, v in spec.node_selector.items()))
    if any(spec.node_affinity):
        parts.append("required node affinity " + " OR ".join(
            " AND ".join(f"{r.key} {r.operator} {','.join(r.values)}".strip() for r in term) for term in spec.node_affinity if term))
    return "; ".join(parts)


def _pending(ctx: Context) -> list[tuple[Pod, list]]:
    out = []
    for pod in ctx.e.pods:
        if pod.terminating or pod.node:
            continue
        evs = [e for e in ctx.events("Pod", pod.name, reason="FailedScheduling") if "nodes are available" in e.message]
        if pod.status == "Pending" or pod.phase == "Pending" or evs:
            out.append((pod, sorted(evs, key=lambda e: e.age_seconds if e.age_seconds is not None else 0)))
    return out


def unschedulable(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    done: set[str] = set()
    for pod, evs in _pending(ctx):
        wl = pod.workload or pod.name
        if wl in done:
            continue
        spec = pod.spec or ctx.spec_of(wl)
        if not evs:
            continue  # Pending with no scheduler verdict: the infrastructure signatures look at why
        done.add(wl)
        ev = evs[0]
        reasons = parse_reasons(ev.message)
        facts = [ctx.event_fact(ev)]
        if "claim" in reasons:
            out += volumes.claim_causes(ctx, pod, wl, ev)
            continue
        obj = ctx.app(wl)
        if "anti" in reasons:
            out.append(ctx.hyp(Cause.anti_affinity_unsatisfiable, obj, 0.93,
                               f"{pod.name} cannot be placed: its required pod anti-affinity excludes every node", facts))
        for res, cause in (("cpu", Cause.insufficient_cpu), ("memory", Cause.insufficient_memory)):
            if res in reasons:
                need = _request(spec, res) if spec else 0.0
                biggest = max((parse_quantity(n.allocatable.get(res)) or 0.0 for n in ctx.e.nodes), default=0.0)
                facts2 = list(facts)
                if need and biggest:
                    facts2.append(ctx.field_fact(f"{obj} requests", f"{res} request {need:g} vs the largest node's allocatable {biggest:g}"))
                out.append(ctx.hyp(cause, obj, 0.92 if (not biggest or need > biggest * 0.5) else 0.8,
                                   f"{pod.name} requests more {res} than any node can offer", facts2, resource=res))
        out += _placement(ctx, pod, wl, spec, reasons, facts)
    return out


def _placement(ctx: Context, pod: Pod, wl: str, spec: PodSpec | None, reasons: dict[str, int], facts: list[Fact]) -> list[Hypothesis]:
    """Selector / affinity / taint / cordon, judged per node when the nodes are known."""
    obj = ctx.app(wl)
    if not ({"match", "taint", "cordon"} & reasons.keys()):
        return []
    nodes = ctx.e.nodes
    if spec is None or not nodes:
        ranked = sorted(((k, v) for k, v in reasons.items() if k in ("match", "taint", "cordon")), key=lambda kv: -kv[1])
        causes = {"match": Cause.node_selector_unsatisfiable, "taint": Cause.taint_not_tolerated, "cordon": Cause.nodes_cordoned}
        return [ctx.hyp(causes[k], obj, 0.6 - 0.15 * i, f"{pod.name} is unschedulable ({v} node(s): {k})", facts)
                for i, (k, v) in enumerate(ranked)]
    by_selector = [n for n in nodes if selector_ok(spec, n)]
    by_affinity = [n for n in nodes if affinity_ok(spec, n)]
    candidates = [n for n in by_selector if n in by_affinity]
    # A control-plane node that is cordoned or tainted is the cluster's design, not the incident: when it is the
    # only node left, the constraint that excluded every worker is what changed.
    workers = [n for n in candidates if not (control_plane(n) and (cordoned(spec, n) or untolerated(spec, n)))]
    if candidates and not workers and len(candidates) < len(nodes):
        by_selector = [n for n in by_selector if n not in candidates] if spec.node_selector else by_selector
        by_affinity = [n for n in by_affinity if n not in candidates] if any(spec.node_affinity) else by_affinity
        candidates = []
    out: list[Hypothesis] = []
    wanted = _describe_spec(spec)
    if not candidates:
        spec_fact = ctx.field_fact(f"{obj} spec.template.spec", wanted or "node constraints")
        if spec.node_selector and not by_selector:
            out.append(ctx.hyp(Cause.node_selector_unsatisfiable, obj, 0.95,
                               f"no node has the labels {pod.name}'s nodeSelector asks for", facts + [spec_fact],
                               node_selector=",".join(f"{k}={v}" for k, v in spec.node_selector.items())))
        if any(spec.node_affinity) and not by_affinity:
            out.append(ctx.hyp(Cause.node_affinity_unsatisfiable, obj, 0.94,
                               f"no node satisfies {pod.name}'s required node affinity", facts + [spec_fact]))
        if not out:
            out.append(ctx.hyp(Cause.node_affinity_unsatisfiable if any(spec.node_affinity) else Cause.node_selector_unsatisfiable,
                               obj, 0.8, f"no node satisfies both {pod.name}'s nodeSelector and node affinity", facts + [spec_fact]))
        return out
    names = ", ".join(n.name for n in candidates)
    taints = {n.name: untolerated(spec, n) for n in candidates}
    cords = [n for n in candidates if cordoned(spec, n)]
    if all(cordoned(spec, n) or taints[n.name] for n in candidates):
        node_facts = [ctx.field_fact(f"node/{n.name}", "unschedulable (cordoned)") for n in cords[:3]]
        node_facts += [ctx.field_fact(f"node/{n}", "taints " + ", ".join(t)) for n, t in taints.items() if t][:3]
        if cords and len(cords) >= sum(1 for t in taints.values() if t):
            out.append(ctx.hyp(Cause.nodes_cordoned, obj, 0.93,
                               f"every node {pod.name} may run on ({names}) is cordoned", facts + node_facts,
                               nodes=",".join(n.name for n in cords)))
            if any(taints.values()):
                out.append(ctx.hyp(Cause.taint_not_tolerated, obj, 0.5, f"{pod.name} does not tolerate taints on {names}",
                                   facts + node_facts))
        else:
            out.append(ctx.hyp(Cause.taint_not_tolerated, obj, 0.93,
                               f"every node {pod.name} may run on ({names}) has a taint it does not tolerate",
                               facts + node_facts, taints=";".join(f"{n}={','.join(t)}" for n, t in taints.items() if t)))
            if cords:
                out.append(ctx.hyp(Cause.nodes_cordoned, obj, 0.5, f"some candidate nodes are cordoned", facts + node_facts))
        if wanted and len(candidates) < len(nodes):
            alt = Cause.node_affinity_unsatisfiable if any(spec.node_affinity) and len(by_affinity) < len(nodes) else Cause.node_selector_unsatisfiable
            out.append(ctx.hyp(alt, obj, 0.3, f"{pod.name}'s node constraints ({wanted}) narrow it to {names}", facts))
        return out
    # Candidates exist that are neither cordoned nor tainted: the scheduler's own counts are all we have.
    ranked = sorted(((k, v) for k, v in reasons.items() if k in ("match", "taint", "cordon")), key=lambda kv: -kv[1])
    causes = {"match": Cause.node_selector_unsatisfiable, "taint": Cause.taint_not_tolerated, "cordon": Cause.nodes_cordoned}
    return [ctx.hyp(causes[k], obj, 0.55 - 0.1 * i, f"{pod.name} is unschedulable ({v} node(s): {k})", facts)
            for i, (k, v) in enumerate(ranked)]


SIGNATURES = (unschedulable,)
