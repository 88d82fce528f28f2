"""An index over `Evidence` that every signature shares: pods by workload, events by object, logs by workload,
which workloads are in trouble, and the helpers that turn an observation into a quoted `Fact`."""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

from k8s_runbooks.diagnosis.evidence import Event, Evidence, LogExcerpt, ObjectRef, Pod, PodSpec, Service, Workload
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis

RECENT_SECONDS = 900.0  # events older than this about objects that no longer exist belong to an earlier incident
RESTART_WINDOW_SECONDS = 900.0  # a restart older than this belongs to an earlier incident
_LOG_SUFFIX = re.compile(r"\.(previous|istio-proxy|app)$")


_SETTING = re.compile(r"^(?P<stem>.*?)_?(?P<part>HOST|HOSTNAME|SERVER|ADDR|ADDRESS|PORT)$", re.I)
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
# 'mysql://h:3306/db', 'jdbc:mysql://h:3306/db', 'redis://:pw@h:6379/0', 'h:3306', 'h:3306/db'
_URL = re.compile(r"^(?:(?:jdbc:)?(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/]*@)?)?(?P<host>[a-z0-9][a-z0-9.-]*)(?::(?P<port>\d{1,5}))?(?:[/?].*)?$", re.I)


@dataclass(frozen=True)
class Address:
    """A host (and port) a workload's configuration points at, and where that was read."""

    variable: str
    host: str
    port: int | None
    where: str
    value: str
    scheme: str = ""
    port_variable: str | None = None
    port_where: str | None = None

    @property
    def short_host(self) -> str:
        return self.host.split(".", 1)[0]


def base_workload(name: str) -> str:
    """'svc.previous' / 'svc.istio-proxy' (per-container log keys) -> 'svc'."""
    while True:
        stripped = _LOG_SUFFIX.sub("", name)
        if stripped == name:
            return name
        name = stripped


class Context:
    def __init__(self, evidence: Evidence, symptom: str = "") -> None:
        self.e = evidence
        self.ns = evidence.namespace
        self.symptom = (symptom or "").lower()
        self.workloads: dict[str, Workload] = {w.name: w for w in evidence.workloads}
        self.pods_by_wl: dict[str, list[Pod]] = defaultdict(list)
        for pod in evidence.pods:
            if pod.workload:
                self.pods_by_wl[pod.workload].append(pod)
        self.pod_names = {p.name for p in evidence.pods}
        self.events_by_obj: dict[tuple[str, str], list[Event]] = defaultdict(list)
        seen: set[tuple[str, str, str, str]] = set()
        for ev in evidence.events:
            key = (ev.object.kind, ev.object.name, ev.reason, ev.message)
            if key in seen:  # describe and `get events` both report it
                continue
            seen.add(key)
            self.events_by_obj[(ev.object.kind, ev.object.name)].append(ev)
        self.logs_by_wl: dict[str, list[LogExcerpt]] = defaultdict(list)
        for excerpt in evidence.logs:
            self.logs_by_wl[base_workload(excerpt.workload)].append(excerpt)
        self.services: dict[str, Service] = {s.name: s for s in evidence.services}
        self._blobs: dict[str, tuple[str, list[int], list[str]]] = {}

    # -------------------------------------------------------------------------------- objects
    def app(self, name: str) -> ObjectRef:
        kind = self.workloads[name].kind if name in self.workloads else "Deployment"
        return ObjectRef(kind=kind, name=name, namespace=self.ns)

    def namespace_ref(self) -> ObjectRef:
        return ObjectRef(kind="Namespace", name=self.ns)

    @staticmethod
    def node_ref(name: str) -> ObjectRef:
        return ObjectRef(kind="Node", name=name)

    def spec_of(self, workload: str) -> PodSpec | None:
        wl = self.workloads.get(workload)
        if wl is not None and wl.template is not None:
            return wl.template
        return next((p.spec for p in self.pods_by_wl.get(workload, []) if p.spec is not None), None)

    def workload_for_labels(self, labels: dict[str, str]) -> str | None:
        """The workload whose pods carry `labels` (a Service selector): by pods, then by templates."""
        if not labels:
            return None
        for pod in self.e.pods:
            if pod.workload and labels.items() <= pod.labels.items():
                return pod.workload
        for wl in self.e.workloads:
            if wl.template and labels.items() <= wl.template.labels.items():
                return wl.name
        return None

    def hosts_of(self, workload: str) -> set[str]:
        """Host names `workload` is configured to reach: env values and the coordinates of the Secrets and
        ConfigMaps its env comes from ('tsdb-mysql-leader:3306' -> 'tsdb-mysql-leader')."""
        spec = self.spec_of(workload)
        if spec is None:
            return set()
        refs: set[tuple[str, str]] = set()
        values: list[str] = []
        for c in spec.containers + spec.init_containers:
            values += [v.value for v in c.env if v.value]
            refs |= {("Secret", v.secret_ref.name) for v in c.env if v.secret_ref}
            refs |= {("ConfigMap", v.config_map_ref.name) for v in c.env if v.config_map_ref}
            refs |= {(f.kind, f.name) for f in c.env_from}
        for kind, items in (("Secret", self.e.secrets), ("ConfigMap", self.e.config_maps)):
            for item in items or []:
                if (kind, item.name) in refs:
                    values += list(item.coordinates.values())
        hosts = set()
        for v in values:
            host = re.sub(r"^[\w+.-]+://", "", v.strip()).split("/", 1)[0].split(":", 1)[0].split(".", 1)[0]
            if re.match(r"^[a-z][a-z0-9-]*$", host):
                hosts.add(host)
        return hosts

    def settings_of(self, workload: str) -> list[tuple[str, str, str]]:
        """(variable, value, where) for every literal env value of `workload` and every connection setting of the
        Secrets / ConfigMaps its env comes from (`envFrom`, or `valueFrom` a key of one)."""
        spec = self.spec_of(workload)
        if spec is None:
            return []
        out: list[tuple[str, str, str]] = []
        whole: set[tuple[str, str]] = set()
        keyed: dict[tuple[str, str, str], str] = {}
        for c in spec.containers + spec.init_containers:
            out += [(v.name, v.value, f"deployment/{workload} env {v.name}") for v in c.env if v.value]
            whole |= {(f.kind, f.name) for f in c.env_from}
            for v in c.env:
                ref = v.secret_ref or v.config_map_ref
                if ref is not None and ref.key:
                    keyed[("Secret" if v.secret_ref else "ConfigMap", ref.name, ref.key)] = v.name
        for kind, items in (("Secret", self.e.secrets), ("ConfigMap", self.e.config_maps)):
            for item in items or []:
                for key, value in item.coordinates.items():
                    name = key if (kind, item.name) in whole else keyed.get((kind, item.name, key))
                    if name:
                        out.append((name, value, f"{kind.lower()}/{item.name} {key}"))
        return out

    def addresses_of(self, workload: str) -> list[Address]:
        """Where `workload` is configured to connect: `host:port` and URL values, and `<X>_HOST` paired with
        `<X>_PORT` (the way database clients are usually configured)."""
        out: list[Address] = []
        hosts: dict[str, tuple[str, str, str]] = {}
        ports: dict[str, tuple[str, str, str]] = {}
        for name, value, where in self.settings_of(workload):
            m = _SETTING.match(name)
            stem, part = (m.group("stem"), m.group("part").upper()) if m else (name, "")
            value = value.strip()
            if part == "PORT" and value.isdigit():
                ports[stem] = (name, value, where)
                continue
            url = _URL.match(value)
            if url and (url.group("scheme") or url.group("port")):
                out.append(Address(variable=name, host=url.group("host"), port=int(url.group("port")) if url.group("port") else None,
                                   scheme=(url.group("scheme") or "").lower(), where=where, value=value))
            elif part in ("HOST", "HOSTNAME", "SERVER", "ADDR", "ADDRESS") and _HOST.match(value):
                hosts[stem] = (name, value, where)
        for stem, (name, value, where) in hosts.items():
            port = ports.get(stem)
            out.append(Address(variable=name, host=value, port=int(port[1]) if port else None, where=where, value=value,
                               port_variable=port[0] if port else None, port_where=port[2] if port else None))
        return out

    def workload_behind(self, host: str) -> str | None:
        """The workload a Service name leads to."""
        svc = self.services.get(host)
        if svc is not None:
            return self.workload_for_labels(svc.selector)
        return host if host in self.workloads else None

    # -------------------------------------------------------------------------------- health
    @staticmethod
    def pod_unhealthy(pod: Pod) -> bool:
        if pod.status in ("Completed", "Succeeded") or pod.terminating:
            return False
        if pod.status and pod.status != "Running":
            return True
        return any(not c.ready and not c.init for c in pod.containers) or pod.phase == "Pending"

    @staticmethod
    def pod_in_trouble(pod: Pod) -> bool:
        """Unhealthy now, or restarted recently (a liveness probe restarts a pod that then looks Running)."""
        recent = pod.last_restart_age_seconds is not None and pod.last_restart_age_seconds < RESTART_WINDOW_SECONDS
        return (Context.pod_unhealthy(pod) or recent) and not pod.terminating

    @cached_property
    def troubled(self) -> list[str]:
        """Workloads with fewer ready replicas than desired, unhealthy pods or a recent restart: youngest first."""
        names: dict[str, float] = {}
        for wl in self.e.workloads:
            if wl.replicas and (wl.ready_replicas or 0) < wl.replicas:
                names[wl.name] = min(names.get(wl.name, 1e12), wl.age_seconds or 1e9)
        for pod in self.e.pods:
            restarted = pod.last_restart_age_seconds is not None and pod.last_restart_age_seconds < RESTART_WINDOW_SECONDS
            if pod.workload and (self.pod_unhealthy(pod) or restarted):
                names[pod.workload] = min(names.get(pod.workload, 1e12), pod.age_seconds or 1e9)
        return sorted(names, key=lambda n: names[n])

    # -------------------------------------------------------------------------------- events
    def events(self, kind: str, name: str, *, warning: bool | None = None, reason: str | None = None) -> list[Event]:
        out = self.events_by_obj.get((kind, name), [])
        if warning is not None:
            out = [e for e in out if (e.type == "Warning") == warning]
        if reason is not None:
            out = [e for e in out if e.reason == reason]
        return out

    def current_pod_events(self, workload: str, reason: str | None = None) -> list[tuple[Pod, Event]]:
        return [(p, e) for p in self.pods_by_wl.get(workload, []) for e in self.events("Pod", p.name, reason=reason)]

    def live_events(self, reason: str | None = None) -> list[Event]:
        """Events about objects that still exist, plus recent ones about anything."""
        out = []
        for (kind, name), evs in self.events_by_obj.items():
            exists = (kind == "Pod" and name in self.pod_names) or kind not in ("Pod",)
            for e in evs:
                if reason is not None and e.reason != reason:
                    continue
                if exists or (e.age_seconds is not None and e.age_seconds <= RECENT_SECONDS):
                    out.append(e)
        return out

    # -------------------------------------------------------------------------------- logs
    def log_lines(self, workload: str) -> list[tuple[str, str]]:
        """(ref, line) for every kept log line of `workload`, current container first."""
        out = []
        for excerpt in sorted(self.logs_by_wl.get(workload, []), key=lambda x: x.previous):
            ref = f"logs of {excerpt.workload}" + (" (previous container)" if excerpt.previous else "")
            out.extend((ref, line) for line in excerpt.lines)
        return out

    def _log_blob(self, workload: str) -> tuple[str, list[int], list[str]]:
        blob = self._blobs.get(workload)
        if blob is None:
            starts, refs, parts, pos = [], [], [], 0
            for ref, line in self.log_lines(workload):
                starts.append(pos)
                refs.append(ref)
                parts.append(line)
                pos += len(line) + 1
            blob = ("\n".join(parts), starts, refs)
            self._blobs[workload] = blob
        return blob

    def find_log(self, workload: str, pattern: re.Pattern[str]) -> tuple[str, str] | None:
        """The first kept log line of `workload` that `pattern` matches, with where it was read (one regex
        scan over the joined lines, not one per line)."""
        text, starts, refs = self._log_blob(workload)
        m = pattern.search(text)
        if m is None:
            return None
        i = bisect.bisect_right(starts, m.start()) - 1
        end = text.find("\n", starts[i])
        return refs[i], text[starts[i]:end if end >= 0 else len(text)]

    # -------------------------------------------------------------------------------- facts
    @staticmethod
    def event_fact(ev: Event) -> Fact:
        times = f" (x{ev.count})" if ev.count > 1 else ""
        return Fact(source="event", ref=f"{ev.object.kind.lower()}/{ev.object.name} events",
                    text=f"{ev.type} {ev.reason}: {ev.message}{times}"[:600])

    @staticmethod
    def field_fact(ref: str, text: str) -> Fact:
        return Fact(source="field", ref=ref, text=text[:600])

    @staticmethod
    def log_fact(ref: str, line: str) -> Fact:
        return Fact(source="log", ref=ref, text=line.strip()[:600])

    def hyp(self, cause: Cause, obj: ObjectRef, confidence: float, summary: str, facts: list[Fact],
            **details: str) -> Hypothesis:
        return Hypothesis(cause=cause, object=obj, confidence=round(max(0.0, min(confidence, 1.0)), 3),
                          summary=summary, facts=facts[:8], details={k: str(v) for k, v in details.items() if v is not None})
