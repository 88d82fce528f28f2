"""Routing: the Service in front of healthy pods sends traffic nowhere. Its selector matches no pod, its
targetPort is not a port the pods listen on, or its protocol is not theirs. Judged from the Service and
workload specs; an unreachable Service (connectivity check) or missing endpoints make it certain."""

from __future__ import annotations

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Service
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis


def _observed(ctx: Context, svc: Service) -> list[Fact]:
    facts = [Fact(source="connectivity", ref=f"service/{c.service}", text=f"unreachable: {c.detail[:160]}")
             for c in ctx.e.connectivity if c.service == svc.name and not c.ok]
    eps = next((e for e in ctx.e.endpoints if e.name == svc.name), None)
    if eps is not None and not eps.ready:
        facts.append(Fact(source="field", ref=f"endpoints/{svc.name}", text="no ready addresses"))
    return facts


def _owner_of(ctx: Context, svc: Service) -> str | None:
    """The workload a Service fronts: the one selected, else the workload named like the Service."""
    wl = ctx.workload_for_labels(svc.selector)
    if wl:
        return wl
    if svc.name in ctx.workloads:
        return svc.name
    for name, w in ctx.workloads.items():
        tpl = w.template.labels if w.template else {}
        if svc.selector and set(svc.selector) & set(tpl) and any(tpl.get(k) and tpl.get(k) in v for k, v in svc.selector.items()):
            return name
    return None


def services(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for svc in ctx.e.services:
        if not svc.selector or svc.type == "ExternalName":
            continue
        observed = _observed(ctx, svc)
        selected = ctx.workload_for_labels(svc.selector)
        if selected is None:
            owner = _owner_of(ctx, svc) or (svc.name if svc.name in ctx.workloads else None)
            if owner is None:
                continue
            tpl = ctx.spec_of(owner)
            labels = tpl.labels if tpl else {}
            facts = [ctx.field_fact(f"service/{svc.name} spec.selector", ",".join(f"{k}={v}" for k, v in svc.selector.items())),
                     ctx.field_fact(f"pods of {owner} labels", ",".join(f"{k}={v}" for k, v in labels.items()) or "none")] + observed
            out.append(ctx.hyp(Cause.service_selects_no_pods, ctx.app(owner), 0.95 if observed else 0.6,
                               f"Service {svc.name} selects no pod: its selector does not match {owner}'s labels", facts,
                               service=svc.name, selector=",".join(f"{k}={v}" for k, v in svc.selector.items()),
                               labels=",".join(f"{k}={v}" for k, v in labels.items())))
            continue
        spec = ctx.spec_of(selected)
        if spec is None:
            continue
        ports = {p.port: p for c in spec.containers for p in c.ports}
        names = {p.name: p for c in spec.containers for p in c.ports if p.name}
        if not ports:
            continue
        for sp in svc.ports:
            target = sp.target_port if sp.target_port is not None else sp.port
            if isinstance(target, str) and target.isdigit():
                target = int(target)
            if isinstance(target, str) and not names:
                continue  # a named targetPort, and the port names were not visible (kubectl describe omits them)
            cport = names.get(target) if isinstance(target, str) else ports.get(int(target))
            if cport is None:
                facts = [ctx.field_fact(f"service/{svc.name} port {sp.port}", f"targetPort {target}"),
                         ctx.field_fact(f"deployment/{selected} containers", f"listen on {sorted(ports)}")] + observed
                out.append(ctx.hyp(Cause.service_target_port_wrong, ctx.app(selected), 0.95 if observed else 0.45,
                                   f"Service {svc.name} forwards port {sp.port} to {target}; {selected} listens on {sorted(ports)}",
                                   facts, service=svc.name, port=str(sp.port), target_port=str(target),
                                   right_port=str(sorted(ports)[0])))
            elif (sp.protocol or "TCP") != (cport.protocol or "TCP"):
                facts = [ctx.field_fact(f"service/{svc.name} port {sp.port}", f"protocol {sp.protocol}"),
                         ctx.field_fact(f"deployment/{selected} port {cport.port}", f"protocol {cport.protocol}")] + observed
                out.append(ctx.hyp(Cause.service_protocol_wrong, ctx.app(selected), 0.95 if observed else 0.45,
                                   f"Service {svc.name} port {sp.port} is {sp.protocol}; {selected} serves {cport.protocol}", facts,
                                   service=svc.name, port=str(sp.port), protocol=sp.protocol, right_protocol=cport.protocol))
    return out


SIGNATURES = (services,)
