"""Runtime: the container runs and then fails. Out of memory, probes that test the wrong port or protocol or
give up too soon, a crash that arrived with the newest revision, and a plain crash with its last words."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import RESTART_WINDOW_SECONDS, Context
from k8s_runbooks.diagnosis.evidence import Container, Event, Probe
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis

_OOM = re.compile(r"OOM-?killed|OOMKilled|memory limit too low|out of memory", re.I)
_PROBE = re.compile(r"^(?P<kind>Liveness|Readiness|Startup) probe (?:failed|errored): (?P<detail>.*)", re.S)
_ADDR = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}:(?P<port>\d+)")
_PROTOCOL = re.compile(r"malformed HTTP|HTTP/1\.x transport connection broken|server gave HTTP response to HTTPS client|"
                       r"first record does not look like a TLS handshake|http2: frame too large|unexpected HTTP status code|"
                       r"received an unexpected|Unexpected HTTP/2|protocol error", re.I)
_TELLING = re.compile(r"panic|fatal|error|exception|killed|traceback|refused|denied", re.I)


def oom(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        facts: list[Fact] = []
        for pod in ctx.pods_by_wl.get(wl, []):
            for c in pod.containers:
                if c.last_state and c.last_state.reason == "OOMKilled" or c.state.reason == "OOMKilled":
                    facts.append(Fact(source="status", ref=f"pod/{pod.name} container {c.name}", text="last state Terminated: OOMKilled (exit 137)"))
        facts += [ctx.event_fact(e) for _, e in ctx.current_pod_events(wl) if _OOM.search(e.message)][:2]
        if not facts:
            continue
        spec = ctx.spec_of(wl)
        limit = next((c.limits.get("memory") for c in (spec.containers if spec else []) if c.limits.get("memory")), None)
        container = next((c.name for c in (spec.containers if spec else []) if c.limits.get("memory")), "")
        if limit:
            facts.append(ctx.field_fact(f"deployment/{wl} resources", f"memory limit {limit}"))
        out.append(ctx.hyp(Cause.oom_killed, ctx.app(wl), 0.96, f"{wl} is killed for exceeding its memory limit ({limit or 'unset'})",
                           facts, memory_limit=limit or "", container=container))
    return out


def _probe_events(ctx: Context, wl: str) -> dict[str, list[Event]]:
    by_kind: dict[str, list[Event]] = {}
    for _, e in ctx.current_pod_events(wl, reason="Unhealthy"):
        m = _PROBE.match(e.message)
        if m:
            by_kind.setdefault(m.group("kind").lower(), []).append(e)
    return by_kind


def _ports(c: Container) -> set[int | str]:
    return {p.port for p in c.ports} | {p.name for p in c.ports if p.name}


def _probe_of(spec_containers: list[Container], kind: str) -> tuple[Container, Probe] | None:
    for c in spec_containers:
        probe = getattr(c, kind, None)
        if probe is not None:
            return c, probe
    return None


def probes(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    restarting = {p.workload for p in ctx.e.pods if p.workload and p.last_restart_age_seconds is not None
                  and p.last_restart_age_seconds < RESTART_WINDOW_SECONDS}
    for wl in sorted(set(ctx.troubled) | restarting):
        by_kind = _probe_events(ctx, wl)
        spec = ctx.spec_of(wl)
        pods = ctx.pods_by_wl.get(wl, [])
        restarts = sum(c.restart_count for p in pods for c in p.containers)
        killed = [e for _, e in ctx.current_pod_events(wl, reason="Killing") if "liveness probe" in e.message]
        for kind in ("liveness", "readiness"):
            evs = by_kind.get(kind, [])
            found = _probe_of(spec.containers, kind) if spec else None
            if not evs and found is None:
                continue
            total = sum(e.count for e in evs)
            if kind == "liveness" and not (killed or restarts) and total < 3:
                continue
            if kind == "readiness" and (total < 3 or all(p.containers and all(c.ready for c in p.containers) for p in pods)):
                continue
            # A container that crashes on its own also fails its readiness probe while it is down: that echo is
            # not a probe fault unless the probe itself is wrong (port, protocol).
            crashing = kind == "readiness" and bool(restarts) and not killed
            hyp = _judge_probe(ctx, wl, kind, evs, found, killed, crashing)
            if hyp:
                out += hyp
    return out


def _judge_probe(ctx: Context, wl: str, kind: str, evs: list[Event], found: tuple[Container, Probe] | None,
                 killed: list[Event], crashing: bool = False) -> list[Hypothesis]:
    obj = ctx.app(wl)
    facts = [ctx.event_fact(e) for e in sorted(evs, key=lambda e: -e.count)[:2]] + [ctx.event_fact(e) for e in killed[:1]]
    wrong_port = {"liveness": Cause.liveness_probe_wrong_port, "readiness": Cause.readiness_probe_wrong_port}[kind]
    wrong_proto = {"liveness": Cause.liveness_probe_wrong_protocol, "readiness": Cause.readiness_probe_wrong_protocol}[kind]
    detail = " ".join(e.message for e in evs)
    container, probe = found if found else (None, None)
    declared = _ports(container) if container else set()
    port_in_msg = {int(m.group("port")) for m in _ADDR.finditer(detail)}
    if probe is not None:
        facts.append(ctx.field_fact(f"deployment/{wl} container {container.name if container else '?'} {kind}Probe",
                                    f"{probe.kind} port {probe.port} path {probe.path or '-'} delay {probe.initial_delay_seconds}s "
                                    f"timeout {probe.timeout_seconds}s period {probe.period_seconds}s failureThreshold {probe.failure_threshold}"))
    if _PROTOCOL.search(detail):
        return [ctx.hyp(wrong_proto, obj, 0.95, f"the {kind} probe of {wl} speaks the wrong protocol to its port", facts,
                        probe=kind, container=container.name if container else ""),
                ctx.hyp(wrong_port, obj, 0.2, "or it probes the wrong port", facts, probe=kind)]
    probe_port = probe.port if probe is not None else (next(iter(port_in_msg)) if port_in_msg else None)
    if declared and probe_port is not None and probe_port not in declared and probe is not None and probe.kind != "exec":
        right = sorted(p for p in declared if isinstance(p, int))
        return [ctx.hyp(wrong_port, obj, 0.95, f"the {kind} probe of {wl} checks port {probe_port}; the container listens on {right}",
                        facts, probe=kind, container=container.name if container else "", port=str(probe_port),
                        right_port=str(right[0]) if right else "")]
    if declared and port_in_msg and not (port_in_msg & {p for p in declared if isinstance(p, int)}) and probe is None:
        return [ctx.hyp(wrong_port, obj, 0.8, f"the {kind} probe of {wl} hits port(s) {sorted(port_in_msg)}, not the container's",
                        facts, probe=kind)]
    if kind == "liveness" and probe is not None and killed and _aggressive(probe):
        return [ctx.hyp(Cause.liveness_probe_too_aggressive, obj, 0.9,
                        f"the liveness probe of {wl} gives up before the container can answer "
                        f"(delay {probe.initial_delay_seconds}s, period {probe.period_seconds}s, failureThreshold {probe.failure_threshold})",
                        facts, probe=kind, container=container.name if container else "")]
    if kind == "liveness" and killed:
        return [ctx.hyp(Cause.liveness_probe_too_aggressive, obj, 0.55, f"the liveness probe of {wl} keeps restarting it", facts, probe=kind),
                ctx.hyp(wrong_port, obj, 0.3, "or the liveness probe checks the wrong port", facts, probe=kind)]
    if crashing:
        return []
    return [ctx.hyp(wrong_port, obj, 0.4, f"the {kind} probe of {wl} keeps failing", facts, probe=kind),
            ctx.hyp(wrong_proto, obj, 0.3, "or it speaks the wrong protocol", facts, probe=kind)]


def _aggressive(p: Probe) -> bool:
    return p.failure_threshold <= 1 or (p.period_seconds <= 2 and p.initial_delay_seconds <= 5) or p.initial_delay_seconds <= 1 \
        or (p.timeout_seconds <= 1 and p.period_seconds <= 2)


def crash(ctx: Context) -> list[Hypothesis]:
    """A crash loop: with the newest revision (roll back), or a plain crash with the log line that says why."""
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        pods = ctx.pods_by_wl.get(wl, [])
        crashing = [(p, c) for p in pods for c in p.containers
                    if c.state.reason in ("CrashLoopBackOff", "Error") or (c.last_state and c.last_state.reason == "Error")
                    or p.status in ("CrashLoopBackOff", "Error")]
        if not crashing:
            continue
        pod, c = crashing[0]
        exit_code = c.last_state.exit_code if c.last_state else c.state.exit_code
        facts = [Fact(source="status", ref=f"pod/{pod.name} container {c.name}",
                      text=f"{c.state.reason or pod.status}, last exit code {exit_code}, {c.restart_count} restarts")]
        hit = next(((r, ln) for r, ln in reversed(ctx.log_lines(wl)) if _TELLING.search(ln)), None)
        if hit:
            facts.append(ctx.log_fact(*hit))
        rollout = _new_revision(ctx, wl)
        if rollout:
            out.append(ctx.hyp(Cause.crash_after_rollout, ctx.app(wl), 0.85,
                               f"{wl} crashes since revision {rollout[0]}; the previous revision was healthy", facts + [rollout[1]],
                               revision=rollout[0]))
        out.append(ctx.hyp(Cause.app_crash, ctx.app(wl), 0.35, f"{wl} crashes (exit {exit_code})", facts, exit_code=str(exit_code)))
    return out


def _new_revision(ctx: Context, wl: str) -> tuple[str, Fact] | None:
    sets = [r for r in ctx.e.replicasets if r.owner == wl and r.revision is not None]
    if len(sets) < 2:
        return None
    sets.sort(key=lambda r: r.revision or 0)
    new, old = sets[-1], sets[-2]
    bad = [p for p in ctx.pods_by_wl.get(wl, []) if ctx.pod_in_trouble(p)]
    if not bad or not all(p.owner and p.owner.name == new.name for p in bad):
        return None
    if new.template is not None and old.template is not None and new.template == old.template:
        return None  # a restart (same template), not a change: the previous revision would crash the same way
    return str(new.revision), Fact(source="field", ref=f"replicaset/{new.name}",
                                   text=f"revision {new.revision} (images {', '.join(new.images)}); previous {old.name} revision {old.revision}")


def zero_replicas(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.e.workloads:
        if wl.replicas != 0 or wl.kind == "DaemonSet":
            continue
        svc = next((s for s in ctx.e.services if s.selector and wl.template and s.selector.items() <= wl.template.labels.items()), None)
        failing = [c for c in ctx.e.connectivity if not c.ok and svc is not None and c.service == svc.name]
        facts = [ctx.field_fact(f"{wl.kind.lower()}/{wl.name} spec.replicas", "0")]
        facts += [Fact(source="connectivity", ref=f"service/{c.service}", text=c.detail[:200]) for c in failing[:1]]
        conf = 0.93 if (svc is not None and (failing or ctx.symptom)) else 0.6
        out.append(ctx.hyp(Cause.scaled_to_zero, ctx.app(wl.name), conf, f"{wl.name} is scaled to zero replicas"
                           + (f": service {svc.name} has no endpoints" if svc else ""), facts))
    return out


SIGNATURES = (oom, probes, crash, zero_replicas)
