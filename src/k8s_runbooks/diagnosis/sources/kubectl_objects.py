"""kubectl `get` tables and `describe` documents into evidence models (for recorded incidents, where only the
text kubectl printed survives). Each function takes the text and the namespace and never raises on odd input.
Free text is not redacted here: the importer redacts the whole evidence in one pass."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.sources.kubectl_text import (
    DNode,
    event_count,
    events_table,
    parse_age,
    parse_describe,
    parse_selector,
    parse_table,
)

_HASHED = re.compile(r"^(?P<base>.+?)-(?P<hash>[a-z0-9]{6,10})-(?P<suffix>[a-z0-9]{5})$")
_ORDINAL = re.compile(r"^(?P<base>.+)-\d+$")


def workload_of_pod(name: str, owner: str | None = None) -> str | None:
    """The workload a pod name belongs to: 'web-5d9f8c7b6-abcde' -> 'web', 'db-mysql-0' -> 'db-mysql'."""
    if owner and "/" in owner:
        kind, oname = owner.split("/", 1)
        if kind == "ReplicaSet":
            m = re.match(r"^(.+)-[a-z0-9]{6,10}$", oname)
            return m.group(1) if m else oname
        return oname
    m = _HASHED.match(name)
    if m:
        return m.group("base")
    m = _ORDINAL.match(name)
    return m.group("base") if m else None


def _events(node: DNode | None, obj: ev.ObjectRef) -> list[ev.Event]:
    out = []
    for row in events_table(node):
        msg = row.get("Message", "")
        out.append(ev.Event(object=obj, type=row.get("Type") or "Normal", reason=row.get("Reason", ""), message=msg,
                            count=event_count(row.get("Age", "")), age_seconds=parse_age(row.get("Age")),
                            source=(row.get("From") or None)))
    return out


def _table_events(node: DNode | None) -> list[dict[str, str]]:
    return events_table(node)


# ------------------------------------------------------------------------------------ probes and containers
_TIMING = re.compile(r"(delay|timeout|period)=(\d+)s|#(success|failure)=(\d+)")


def parse_probe(text: str) -> ev.Probe | None:
    """kubectl's probe line: 'grpc <pod>:9555 delay=1s ...', 'http-get http://:8080/x delay=...', 'tcp-socket :6379'."""
    text = (text or "").strip()
    if not text:
        return None
    timing: dict[str, int] = {}
    for m in _TIMING.finditer(text):
        if m.group(1):
            timing[{"delay": "initial_delay_seconds", "timeout": "timeout_seconds", "period": "period_seconds"}[m.group(1)]] = int(m.group(2))
        else:
            timing[f"{m.group(3)}_threshold"] = int(m.group(4))
    head = _TIMING.sub("", text).strip()
    kind_word, _, target = head.partition(" ")
    target = target.strip()
    if kind_word == "http-get":
        m = re.match(r"(?P<scheme>https?)://[^:/]*:(?P<port>[^/\s]+)(?P<path>/\S*)?", target)
        if m:
            return ev.Probe(kind="http", port=_port(m.group("port")), path=m.group("path") or "/",
                            scheme=m.group("scheme").upper(), **timing)
        return ev.Probe(kind="http", **timing)
    if kind_word in ("tcp-socket", "grpc"):
        port = target.rsplit(":", 1)[-1] if ":" in target else None
        return ev.Probe(kind="tcp" if kind_word == "tcp-socket" else "grpc", port=_port(port), **timing)
    if kind_word == "exec":
        return ev.Probe(kind="exec", command=[target.strip("[]")], **timing)
    return None


def _port(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


_ENV_SECRET = re.compile(r"<set to the key '(?P<key>[^']*)' (?:in secret|of config map) '(?P<name>[^']*)'>")


def _container(node: DNode) -> tuple[ev.Container, ev.ContainerStatus]:
    ports = []
    for p in re.split(r",\s*", node.val("Port") or node.val("Ports")):
        m = re.match(r"(?:(?P<name>\S+) )?(?P<port>\d+)/(?P<proto>\w+)", p.strip())
        if m:
            ports.append(ev.ContainerPort(port=int(m.group("port")), name=m.group("name"), protocol=m.group("proto")))
    env: list[ev.EnvVar] = []
    env_node = node.get("Environment")
    for e in env_node.children if env_node else []:
        m = _ENV_SECRET.search(e.value)
        if m and "in secret" in e.value:
            env.append(ev.EnvVar(name=e.key, secret_ref=ev.KeyRef(name=m.group("name"), key=m.group("key"),
                                                                 optional="Optional: true" in e.value)))
        elif m:
            env.append(ev.EnvVar(name=e.key, config_map_ref=ev.KeyRef(name=m.group("name"), key=m.group("key"),
                                                                     optional="Optional: true" in e.value)))
        else:
            env.append(ev.EnvVar(name=e.key, value=e.value))
    env_from: list[ev.EnvFrom] = []
    ef = node.get("Environment Variables from")
    for line in (ef.lines if ef else []):
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("Secret", "ConfigMap"):
            env_from.append(ev.EnvFrom(kind=parts[1], name=parts[0], optional="Optional: true" in line))  # type: ignore[arg-type]
    res = {k: {c.key: c.value for c in (node.get(k).children if node.get(k) else [])} for k in ("Limits", "Requests")}
    spec = ev.Container(
        name=node.key, image=node.val("Image"), ports=ports, env=env, env_from=env_from,
        requests=res["Requests"], limits=res["Limits"], liveness=parse_probe(node.val("Liveness")),
        readiness=parse_probe(node.val("Readiness")), startup=parse_probe(node.val("Startup")),
    )
    status = ev.ContainerStatus(
        name=node.key, ready=node.val("Ready") == "True", restart_count=int(node.val("Restart Count") or 0),
        state=_state(node.get("State")), last_state=_state(node.get("Last State")) if node.get("Last State") else None,
    )
    return spec, status


def _state(node: DNode | None) -> ev.ContainerState:
    if node is None:
        return ev.ContainerState()
    word = node.value.lower()
    state = word if word in ("running", "waiting", "terminated") else "unknown"
    code = node.val("Exit Code")
    return ev.ContainerState(state=state, reason=node.val("Reason") or None,  # type: ignore[arg-type]
                             message=node.val("Message") or None, exit_code=int(code) if code.lstrip("-").isdigit() else None)


def _tolerations(values: list[str]) -> list[ev.Toleration]:
    out = []
    for v in values:
        m = re.match(r"(?P<key>[^:=\s]*)(?:=(?P<value>[^:\s]*))?(?::(?P<effect>\w+))?(?: op=(?P<op>\w+))?", v)
        if m:
            out.append(ev.Toleration(key=m.group("key") or None, value=m.group("value"), effect=m.group("effect"),
                                     operator=m.group("op") or ("Equal" if m.group("value") else "Exists")))
    return out


def describe_pod(text: str, namespace: str) -> tuple[ev.Pod, list[ev.Event]]:
    d = parse_describe(text)
    name = d.val("Name")
    specs, statuses = [], []
    for section, init in (("Init Containers", True), ("Containers", False)):
        sec = d.get(section)
        for c in sec.children if sec else []:
            spec, st = _container(c)
            st.init = init
            specs.append((spec, init))
            statuses.append(st)
    volumes = []
    vol = d.get("Volumes")
    for v in vol.children if vol else []:
        t = v.val("Type")
        if t.startswith("Secret"):
            volumes.append(ev.Volume(name=v.key, kind="secret", ref=v.val("SecretName") or None, optional=v.val("Optional") == "true"))
        elif t.startswith("ConfigMap"):
            volumes.append(ev.Volume(name=v.key, kind="configMap", ref=v.val("Name") or None, optional=v.val("Optional") == "true"))
        elif t.startswith("PersistentVolumeClaim"):
            volumes.append(ev.Volume(name=v.key, kind="persistentVolumeClaim", ref=v.val("ClaimName") or None))
    conds = {}
    cnode = d.get("Conditions")
    for line in (cnode.lines[1:] if cnode else []):
        parts = line.split()
        if len(parts) >= 2:
            conds[parts[0]] = parts[1]
    owner = d.val("Controlled By") or None
    node_name = d.val("Node").split("/", 1)[0]
    labels = parse_selector(",".join(d.values("Labels")))
    spec = ev.PodSpec(
        labels=labels, containers=[s for s, init in specs if not init], init_containers=[s for s, init in specs if init],
        volumes=volumes, service_account=d.val("Service Account") or None,
        node_selector=parse_selector(",".join(d.values("Node-Selectors"))), tolerations=_tolerations(d.values("Tolerations")),
    )
    pod = ev.Pod(
        name=name, namespace=d.val("Namespace") or namespace, labels=labels, phase=d.val("Status") or "Unknown",
        node=node_name if node_name and node_name != "<none>" else None, ip=d.val("IP") or None,
        owner=ev.ObjectRef(kind=owner.split("/", 1)[0], name=owner.split("/", 1)[1], namespace=namespace) if owner and "/" in owner else None,
        workload=workload_of_pod(name, owner), containers=statuses, conditions=conds, spec=spec,
        terminating="Terminating" in (d.val("Status") or ""),
    )
    return pod, _events(d.get("Events"), ev.ObjectRef(kind="Pod", name=name, namespace=namespace))


def describe_node(text: str) -> tuple[ev.Node, list[ev.Event]]:
    d = parse_describe(text)
    name = d.val("Name")
    taints = []
    for t in d.values("Taints"):
        m = re.match(r"(?P<key>[^=:]+)(?:=(?P<value>[^:]*))?:(?P<effect>\w+)", t)
        if m:
            taints.append(ev.Taint(key=m.group("key"), value=m.group("value"), effect=m.group("effect")))
    conds = {}
    cnode = d.get("Conditions")
    for line in (cnode.lines[1:] if cnode else []):
        parts = line.split()
        if len(parts) >= 2 and not set(parts[0]) <= {"-"}:
            conds[parts[0]] = parts[1]
    alloc = {c.key: c.value for c in (d.get("Allocatable").children if d.get("Allocatable") else [])}
    requested: dict[str, str] = {}
    ar = d.get("Allocated resources")
    for line in (ar.lines if ar else []):
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("cpu", "memory"):
            requested[parts[0]] = parts[1]
    node = ev.Node(name=name, labels=parse_selector(",".join(d.values("Labels"))), taints=taints,
                   unschedulable=d.val("Unschedulable") == "true", ready=conds.get("Ready", "Unknown"),
                   conditions=conds, allocatable=alloc, allocated_requests=requested)
    return node, _events(d.get("Events"), ev.ObjectRef(kind="Node", name=name))


def describe_service(text: str, namespace: str) -> ev.Service:
    d = parse_describe(text)
    ports: list[ev.ServicePort] = []
    for c in d.children:
        if c.key == "Port":
            m = re.match(r"(?:(?P<name>\S+)\s+)?(?P<port>\d+)/(?P<proto>\w+)", c.value)
            if m:
                ports.append(ev.ServicePort(name=None if m.group("name") in (None, "<unset>") else m.group("name"),
                                            port=int(m.group("port")), protocol=m.group("proto")))
        elif c.key == "TargetPort" and ports:
            tp = c.value.split("/", 1)[0]
            ports[-1].target_port = int(tp) if tp.isdigit() else tp
    return ev.Service(name=d.val("Name"), namespace=namespace, type=d.val("Type") or "ClusterIP",
                      selector=parse_selector(d.val("Selector")), ports=ports, cluster_ip=d.val("IP") or None)


def describe_endpoints(text: str, namespace: str) -> ev.Endpoints:
    d = parse_describe(text)
    ready: list[str] = []
    not_ready: list[str] = []
    sub = d.get("Subsets")
    if sub is not None:
        ready = [a for a in re.split(r"[,\s]+", sub.val("Addresses")) if a and a != "<none>"]
        not_ready = [a for a in re.split(r"[,\s]+", sub.val("NotReadyAddresses")) if a and a != "<none>"]
    return ev.Endpoints(name=d.val("Name"), namespace=namespace, ready=ready, not_ready=not_ready)


def describe_pvc(text: str, namespace: str) -> tuple[ev.PersistentVolumeClaim, list[ev.Event]]:
    d = parse_describe(text)
    name = d.val("Name")
    sc_node = d.get("StorageClass")
    claim = ev.PersistentVolumeClaim(
        name=name, namespace=namespace, status=d.val("Status") or "Pending", volume=d.val("Volume") or None,
        storage_class=(sc_node.value if sc_node is not None else None),
        access_modes=[m for m in d.val("Access Modes").split(",") if m], requested=d.val("Capacity") or None,
    )
    return claim, _events(d.get("Events"), ev.ObjectRef(kind="PersistentVolumeClaim", name=name, namespace=namespace))


def describe_events(text: str, kind: str, namespace: str | None) -> list[ev.Event]:
    d = parse_describe(text)
    return _events(d.get("Events"), ev.ObjectRef(kind=kind, name=d.val("Name"), namespace=namespace))


_ACCESS = {"RWO": "ReadWriteOnce", "ROX": "ReadOnlyMany", "RWX": "ReadWriteMany", "RWOP": "ReadWriteOncePod"}


def access_modes(text: str) -> list[str]:
    return [_ACCESS.get(m.strip(), m.strip()) for m in (text or "").split(",") if m.strip()]


def table(text: str) -> list[dict[str, str]]:
    return parse_table(text)


def quota_rows(text: str, namespace: str) -> list[ev.ResourceQuota]:
    """`kubectl get resourcequota`: REQUEST / LIMIT cells such as 'requests.cpu: 10/1, pods: 3/5'."""
    out = []
    for row in parse_table(text):
        hard: dict[str, str] = {}
        used: dict[str, str] = {}
        for cell in (row.get("REQUEST", ""), row.get("LIMIT", "")):
            for m in re.finditer(r"([\w./-]+): ([^/,\s]+)/([^,\s]+)", cell):
                used[m.group(1)], hard[m.group(1)] = m.group(2), m.group(3)
        if row.get("NAME"):
            out.append(ev.ResourceQuota(name=row["NAME"], namespace=namespace, hard=hard, used=used))
    return out
