"""Infrastructure: a node or a control-plane component fails under the workloads. Component status (systemd's
Active: line, or the static pod) is direct evidence; NotReady nodes, pods stuck creating on one node, pending
pods no scheduler ever judged, and node-level network anomalies point at the node when nothing else does."""

from __future__ import annotations

import re
from collections import Counter

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis
from k8s_runbooks.diagnosis.signatures.performance import latency_roots

_COMPONENT = {"kubelet": Cause.kubelet_down, "containerd": Cause.container_runtime_down, "docker": Cause.container_runtime_down,
              "cri-o": Cause.container_runtime_down, "crio": Cause.container_runtime_down, "kube-proxy": Cause.kube_proxy_down,
              "kube-scheduler": Cause.scheduler_down}
_RUNTIME_SOCK = re.compile(r"containerd\.sock|crio\.sock|dockershim\.sock|container runtime is down|runtime network not ready", re.I)


def components(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for comp in ctx.e.node_components:
        cause = _COMPONENT.get(comp.component)
        if cause is None or comp.active is not False:
            continue
        facts = [Fact(source="component", ref=f"node/{comp.node} {comp.component}", text=f"Active: {comp.state}")]
        facts += [Fact(source="component", ref=f"node/{comp.node} {comp.component} journal", text=ln) for ln in comp.log_lines[-1:]]
        out.append(ctx.hyp(cause, ctx.node_ref(comp.node), 0.97, f"{comp.component} on {comp.node} is not running", facts,
                           node=comp.node, component=comp.component))
    return out


def nodes(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    known_down = {h.object.name for h in components(ctx)}
    for node in ctx.e.nodes:
        if node.name in known_down:
            continue
        stuck = [p for p in ctx.e.pods if p.node == node.name and (p.status or "").startswith(("ContainerCreating", "Init:", "PodInitializing", "Unknown"))]
        runtime_evs = [e for e in ctx.events("Node", node.name) if _RUNTIME_SOCK.search(e.message)]
        not_ready = node.ready in ("False", "Unknown") or [e for e in ctx.events("Node", node.name) if e.reason == "NodeNotReady"]
        if runtime_evs:
            out.append(ctx.hyp(Cause.container_runtime_down, ctx.node_ref(node.name), 0.88,
                               f"the container runtime on {node.name} does not answer the kubelet",
                               [ctx.event_fact(e) for e in runtime_evs[:2]], node=node.name))
        if not_ready:
            facts = [Fact(source="field", ref=f"node/{node.name} conditions", text=f"Ready={node.ready}")]
            facts += [ctx.event_fact(e) for e in ctx.events("Node", node.name, reason="NodeNotReady")[:1]]
            out.append(ctx.hyp(Cause.kubelet_down, ctx.node_ref(node.name), 0.75 if stuck else 0.65,
                               f"{node.name} is NotReady: its kubelet stopped reporting", facts, node=node.name))
            out.append(ctx.hyp(Cause.node_not_ready, ctx.node_ref(node.name), 0.55, f"{node.name} is NotReady", facts, node=node.name))
        elif len(stuck) >= 2 and not runtime_evs:
            facts = [Fact(source="status", ref=f"pod/{p.name}", text=f"{p.status} on {node.name}") for p in stuck[:3]]
            out.append(ctx.hyp(Cause.container_runtime_down, ctx.node_ref(node.name), 0.6,
                               f"{len(stuck)} pods on {node.name} never get their containers", facts, node=node.name))
    return out


def scheduler(ctx: Context) -> list[Hypothesis]:
    """Pods Pending with no node and no FailedScheduling verdict at all: nobody is scheduling."""
    if any(h.cause is Cause.scheduler_down for h in components(ctx)):
        return []
    unjudged = [p for p in ctx.e.pods if not p.node and (p.status == "Pending" or p.phase == "Pending") and not p.terminating
                and not ctx.events("Pod", p.name, reason="FailedScheduling")]
    if not unjudged:
        return []
    masters = [n.name for n in ctx.e.nodes if any(k.endswith("role/master") or k.endswith("role/control-plane") or
                                                  n.labels.get("kubernetes.io/role") in ("master", "control-plane") for k in n.labels)]
    where = masters[0] if masters else "control-plane"
    facts = [Fact(source="status", ref=f"pod/{p.name}", text="Pending, no node assigned, no scheduling event") for p in unjudged[:3]]
    return [ctx.hyp(Cause.scheduler_down, ctx.node_ref(where), 0.7, f"{len(unjudged)} pod(s) wait for a scheduler that never answers",
                    facts, node=where)]


_RETRANS = re.compile(r"Current=(?P<c>[\d.]+)\s*retrans")
STRONG_RETRANSMISSIONS = 2.0  # retransmissions per second: a few are normal, several per second are loss


def node_network(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for a in ctx.e.anomalies:
        if a.entity_kind == "Node" and re.search(r"NETWORK_QUALITY|Retransmission|packet loss", a.category + " " + a.detail, re.I):
            m = _RETRANS.search(a.detail)
            rate = float(m.group("c")) if m else STRONG_RETRANSMISSIONS
            out.append(ctx.hyp(Cause.node_packet_loss, ctx.node_ref(a.entity), 0.92 if rate >= STRONG_RETRANSMISSIONS else 0.4,
                               f"{a.entity} retransmits TCP segments ({rate:g}/s): packets are lost",
                               [Fact(source="alert", ref=f"node/{a.entity}", text=a.detail)], node=a.entity))
    roots, slow, details = latency_roots(ctx)
    placed = {p.workload: p.node for p in ctx.e.pods if p.workload and p.node}
    by_node: Counter[str] = Counter(placed[r] for r in roots if r in placed)
    if not by_node:
        return out
    node, n = by_node.most_common(1)[0]
    if n >= 2 and n == len([r for r in roots if r in placed]):
        facts = [Fact(source="alert", ref=f"service/{r}", text=(details.get(r) or [""])[0][:300]) for r in roots[:3]]
        facts.append(Fact(source="field", ref=f"node/{node}", text=f"runs {', '.join(r for r in roots if placed.get(r) == node)}"))
        out.append(ctx.hyp(Cause.node_network_delay, ctx.node_ref(node), 0.88,
                           f"{n} services slow down independently, all on {node}: the node's network adds the delay", facts, node=node))
    return out


SIGNATURES = (components, nodes, scheduler, node_network)
