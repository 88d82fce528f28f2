"""Failures an application reports about what it depends on: its database (credentials refused, wrong port,
read-only, out of connections), a port another container of the pod already holds, a name that does not
resolve. The application's own log line is the evidence; the object is the side that must change."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.evidence import Service
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis

# The database server's (or its driver's) standard wording, whatever the client's language: MySQL/MariaDB (server
# text, Node's ER_* codes, Go's "Error 1045"), PostgreSQL, MongoDB, Redis, SQL Server, Oracle.
_AUTH = re.compile(r"Access denied for user|password authentication failed|authentication failed for user|ER_ACCESS_DENIED|"
                   r"Error 1045|MongoSecurityException|Exception authenticating MongoCredential|sasl conversation error|WRONGPASS|"
                   r"NOAUTH Authentication required|Login failed for user|ORA-01017", re.I)
_READ_ONLY = re.compile(r"--read-only option|read-only transaction|database is read.only|is in read.only mode|super-read-only|"
                        r"ER_OPTION_PREVENTS_STATEMENT|Error 1290|READONLY You can't write|NotWritablePrimary|"
                        r"attempt to write a readonly database", re.I)
_TOO_MANY = re.compile(r"Too many connections|too many clients already|remaining connection slots are reserved|ER_CON_COUNT_ERROR|"
                       r"Error 1040|max number of clients reached|too many open connections", re.I)
_LINK = re.compile(r"Communications link failure|Connection refused|ECONNREFUSED|could not connect to server|"
                   r"connection to server at .* failed", re.I)
# Java, Go, glibc (C, Python), Node.js, Python's socket, .NET
_UNKNOWN_HOST = re.compile(r"UnknownHostException: (?P<host>[\w.-]+)|Temporary failure in name resolution|"
                           r"lookup (?P<host2>[\w.-]+)(?: on [\d.:]+)?: (?:read udp \S+: )?(?:no such host|server misbehaving|i/o timeout)|"
                           r"getaddrinfo (?:ENOTFOUND|EAI_AGAIN) (?P<host3>[\w.-]+)|Name or service not known|"
                           r"No such host is known", re.I)
_IN_USE = re.compile(r"already in use|EADDRINUSE|Address in use|bind: address already|PortInUseException", re.I)
_DB_WORDS = re.compile(r"jdbc|mysql|mariadb|postgres|sql|Hikari|database|redis|mongo", re.I)
_DB_SCHEMES = {"mysql", "mariadb", "postgres", "postgresql", "mongodb", "mongodb+srv", "redis", "rediss", "sqlserver", "oracle"}
_DB_SETTING = re.compile(r"(?:^|_)(?:DB|DATABASE|MYSQL|MARIADB|POSTGRES|POSTGRESQL|PG|MONGO|MONGODB|REDIS|JDBC|DATASOURCE)(?:_|$)", re.I)
_DB_IMAGE = re.compile(r"mysql|mariadb|postgres|percona|mongo|redis|cockroach|tidb", re.I)


def _log_hits(ctx: Context, pattern: re.Pattern[str], workloads: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(workload, ref, line) for the first matching line of each workload."""
    out = []
    for wl in workloads if workloads is not None else sorted(ctx.logs_by_wl):
        hit = ctx.find_log(wl, pattern)
        if hit:
            out.append((wl, *hit))
    return out


def _database_workloads(ctx: Context, hints: str = "") -> list[str]:
    dbs = []
    for wl in ctx.e.workloads:
        images = " ".join(c.image for c in (wl.template.containers if wl.template else []))
        if _DB_IMAGE.search(images) or _DB_IMAGE.search(wl.name) and wl.kind == "StatefulSet":
            dbs.append(wl.name)
    for d in ctx.e.dependencies:
        dbs += [x for x in d.databases if x in ctx.workloads and x not in dbs]
    dbs = sorted(set(dbs))
    named = [d for d in dbs if d in hints]
    return named + [d for d in dbs if d not in named]


def _database_settings_targets(ctx: Context, callers: list[str]) -> list[str]:
    """Workloads behind the hosts the callers' database settings name (`ORDER_MYSQL_HOST`, `DB_HOST`, a `jdbc:mysql://`
    URL): the database, whatever it is called and whether or not its image is known."""
    out: list[str] = []
    for wl in callers:
        for addr in ctx.addresses_of(wl):
            if addr.scheme in _DB_SCHEMES or _DB_SETTING.search(addr.variable):
                target = ctx.workload_behind(addr.short_host)
                if target and target not in callers and target not in out:
                    out.append(target)
    return out


def _configured_database(ctx: Context, callers: list[str], databases: list[str]) -> str | None:
    """The database the failing callers are configured to use (their hosts, through Services), else the first known."""
    votes: dict[str, int] = {}
    for wl in callers:
        for host in ctx.hosts_of(wl):
            target = ctx.workload_behind(host)
            if target in databases:
                votes[target] = votes.get(target, 0) + 1
    if votes:
        return max(sorted(votes), key=lambda d: votes[d])
    return databases[0] if databases else None


def database(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    troubled = ctx.troubled
    for wl, ref, line in _log_hits(ctx, _AUTH):
        conf = 0.93 if wl in troubled else 0.6
        out.append(ctx.hyp(Cause.db_auth_failed, ctx.app(wl), conf, f"{wl} cannot log in to its database", [ctx.log_fact(ref, line)]))
    for wl, ref, line in _log_hits(ctx, _LINK, [w for w in troubled if w in ctx.logs_by_wl]):
        if ctx.find_log(wl, _UNKNOWN_HOST) or ctx.find_log(wl, _AUTH):
            continue
        if not _DB_WORDS.search(" ".join(x for _, x in ctx.log_lines(wl))):
            continue
        out.append(ctx.hyp(Cause.db_wrong_port, ctx.app(wl), 0.85, f"{wl}'s database connection is refused: it dials a port nothing listens on",
                           [ctx.log_fact(ref, line)]))
    out += _database_ports(ctx, troubled)
    hints = " ".join(line for _, _, line in _log_hits(ctx, _READ_ONLY) + _log_hits(ctx, _TOO_MANY))
    for cause, pattern, what in ((Cause.db_read_only, _READ_ONLY, "the database refuses writes: it runs read-only"),
                                 (Cause.db_connections_exhausted, _TOO_MANY, "the database has no connections left")):
        hits = _log_hits(ctx, pattern)
        probe_evs = [e for e in ctx.live_events("Unhealthy") if pattern.search(e.message)]
        if not hits and not probe_evs:
            continue
        owners = [e.object.name for e in probe_evs]
        db = next((w for w in ctx.workloads if any(o.startswith(w + "-") for o in owners)), None)
        callers = sorted({wl for wl, _, _ in hits})
        known = _database_workloads(ctx, hints)
        db = db or _configured_database(ctx, callers, known + [t for t in _database_settings_targets(ctx, callers) if t not in known])
        facts = [ctx.event_fact(e) for e in probe_evs[:1]] + [ctx.log_fact(ref, line) for _, ref, line in hits[:2]]
        target = ctx.app(db) if db else ctx.app(hits[0][0])
        out.append(ctx.hyp(cause, target, 0.93 if db else 0.6, f"{what} ({len(callers)} caller(s) fail: {', '.join(callers[:4])})",
                           facts, callers=",".join(callers)))
    return out


def _served_ports(svc: Service) -> set[int]:
    return {p.port for p in svc.ports} | {int(p.target_port) for p in svc.ports if str(p.target_port or "").isdigit()}


def _database_ports(ctx: Context, troubled: list[str]) -> list[Hypothesis]:
    """A failing workload's database settings (`<X>_HOST` with `<X>_PORT`, or a database URL) name a Service that
    does not serve that port: its connections are refused whatever the client's language."""
    out: list[Hypothesis] = []
    for wl in troubled:
        for addr in ctx.addresses_of(wl):
            if addr.port is None or not (addr.port_variable or addr.scheme in _DB_SCHEMES):
                continue  # a plain `host:port` address variable is env_addresses' to judge
            svc = ctx.services.get(addr.short_host)
            if svc is None or not svc.ports or addr.port in _served_ports(svc):
                continue
            facts = [ctx.field_fact(addr.port_where or addr.where, f"{addr.port_variable or addr.variable}: {addr.port}"),
                     ctx.field_fact(f"service/{svc.name} ports", ", ".join(str(p.port) for p in svc.ports))]
            hit = ctx.find_log(wl, _LINK)
            if hit:
                facts.append(ctx.log_fact(*hit))
            right = svc.ports[0].port
            out.append(ctx.hyp(Cause.db_wrong_port, ctx.app(wl), 0.95 if hit else 0.85,
                               f"{wl}'s database settings dial port {addr.port} of {svc.name}, which serves {right}", facts,
                               variable=addr.port_variable or addr.variable, host=svc.name, port=str(addr.port), right_port=str(right)))
    return out


def port_conflict(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        hit = ctx.find_log(wl, _IN_USE)
        if not hit:
            continue
        pods = ctx.pods_by_wl.get(wl, [])
        sidecars = max((len([c for c in p.containers if not c.init]) for p in pods), default=1)
        conf = 0.93 if sidecars > 1 else 0.7
        out.append(ctx.hyp(Cause.sidecar_port_conflict, ctx.app(wl), conf,
                           f"{wl} cannot bind its port: another container of the pod holds it", [ctx.log_fact(*hit)]))
    return out


def name_resolution(ctx: Context) -> list[Hypothesis]:
    """A name that does not resolve: a mistyped address in the workload's env (the name matches no Service), or
    the pod's DNS settings (the name is a real Service, so the resolver is what fails)."""
    out: list[Hypothesis] = []
    services = set(ctx.services) | {m.name for m in ctx.e.declared_missing if m.kind == "Service"}
    for wl in sorted(ctx.logs_by_wl):
        hit = ctx.find_log(wl, _UNKNOWN_HOST)
        if not hit:
            continue
        m = _UNKNOWN_HOST.search(hit[1])
        host = (m.group("host") or m.group("host2") or m.group("host3") or "") if m else ""
        short = host.split(".", 1)[0]
        spec = ctx.spec_of(wl)
        facts = [ctx.log_fact(*hit)]
        custom_dns = spec is not None and (spec.dns_policy == "None" or bool(spec.dns_nameservers))
        if custom_dns and spec is not None:
            facts.append(ctx.field_fact(f"deployment/{wl} spec.template.spec", f"dnsPolicy {spec.dns_policy}, nameservers {spec.dns_nameservers}"))
            out.append(ctx.hyp(Cause.dns_resolution_failed, ctx.app(wl), 0.93,
                               f"{wl} cannot resolve {host or 'names'}: its pods use a custom DNS configuration", facts, host=host))
        elif short and short not in services and not host.endswith(".svc") and not _other_namespace(ctx, host):
            env = next((v for c in (spec.containers if spec else []) for v in c.env if v.value and short in v.value), None)
            if env is not None:
                facts.append(ctx.field_fact(f"deployment/{wl} env {env.name}", env.value or ""))
            out.append(ctx.hyp(Cause.env_address_wrong, ctx.app(wl), 0.9 if env else 0.7,
                               f"{wl} dials {host}, which is not a Service in {ctx.ns}", facts,
                               variable=env.name if env else "", host=host))
        elif short in services and wl in ctx.troubled:
            out.append(ctx.hyp(Cause.dns_resolution_failed, ctx.app(wl), 0.6, f"{wl} cannot resolve the Service {host}", facts, host=host))
    return out


def _other_namespace(ctx: Context, host: str) -> bool:
    """'istiod.istio-system': a Service of another namespace, which the evidence (this namespace's) cannot judge."""
    parts = host.split(".")
    return len(parts) >= 2 and parts[1] != ctx.ns and parts[1] not in ("svc", "cluster", "local")


def env_addresses(ctx: Context) -> list[Hypothesis]:
    """An *_ADDR / *_HOST / *_URL env value naming a host that is no Service, with the caller's log failing on it."""
    out: list[Hypothesis] = []
    services = set(ctx.services) | {m.name for m in ctx.e.declared_missing if m.kind == "Service"}
    if not services:
        return out
    for wl in ctx.e.workloads:
        for c in wl.template.containers if wl.template else []:
            for var in c.env:
                if not var.value or not re.search(r"(ADDR|ADDRESS|HOST|HOSTNAME|URL|URI|ENDPOINT|SERVICE|SERVER)$", var.name):
                    continue
                hostport = re.sub(r"^\w+://", "", var.value).split("/", 1)[0]
                host, _, port = hostport.partition(":")
                if not host or "." in host or host in ("localhost",) or re.match(r"^[\d.]+$", host):
                    continue
                if host in services:
                    out += _wrong_port(ctx, wl.name, var.name, var.value, host, port)
                    continue
                near = [s for s in services if s in host or host in s]
                hit = ctx.find_log(wl.name, re.compile(re.escape(host)))
                if not near and not hit:
                    continue
                facts = [ctx.field_fact(f"deployment/{wl.name} env {var.name}", var.value)]
                if hit:
                    facts.append(ctx.log_fact(*hit))
                out.append(ctx.hyp(Cause.env_address_wrong, ctx.app(wl.name), 0.9 if hit else 0.75,
                                   f"{wl.name}'s {var.name} points at {host}, which is not a Service" +
                                   (f" (did you mean {near[0]}?)" if near else ""), facts,
                                   variable=var.name, value=var.value, suggestion=near[0] if near else ""))
    return out


def _wrong_port(ctx: Context, wl: str, name: str, value: str, host: str, port: str) -> list[Hypothesis]:
    svc = ctx.services.get(host)
    if svc is None or not port.isdigit() or not svc.ports or int(port) in {p.port for p in svc.ports}:
        return []
    hit = ctx.find_log(wl, re.compile(re.escape(f"{host}:{port}")))
    facts = [ctx.field_fact(f"deployment/{wl} env {name}", value),
             ctx.field_fact(f"service/{host} ports", ", ".join(str(p.port) for p in svc.ports))]
    if hit:
        facts.append(ctx.log_fact(*hit))
    right = svc.ports[0].port
    return [ctx.hyp(Cause.env_address_wrong, ctx.app(wl), 0.9 if hit else 0.7,
                    f"{wl}'s {name} dials port {port} of {host}, which serves {right}", facts,
                    variable=name, value=value, suggestion=f"{host}:{right}")]


_AFFIXES = {"service", "svc", "server", "backend", "api", "app"}


def _system_affixes(names: list[str]) -> set[str]:
    """Name words most of the namespace's services share at their start or end (a system prefix like `shop-`, a
    suffix like `-service`): they say nothing about which service a route means."""
    tokens = [n.lower().split("-") for n in names if "-" in n]
    counts: dict[str, int] = {}
    for t in tokens:
        for word in {t[0], t[-1]}:
            counts[word] = counts.get(word, 0) + 1
    return {w for w, c in counts.items() if c >= 3 and c * 2 >= len(names)} | _AFFIXES


def _stem(name: str, affixes: set[str]) -> str:
    """What a name says about the service: 'shop-order-service', 'order-svc', 'orderservice', 'order' -> 'order'."""
    tokens = [t for t in name.lower().split("-") if t]
    while len(tokens) > 1 and tokens[0] in affixes:
        tokens = tokens[1:]
    while len(tokens) > 1 and tokens[-1] in affixes:
        tokens = tokens[:-1]
    s = re.sub(r"[^a-z0-9]", "", "".join(tokens))
    for word in ("service", "svc"):  # 'cartservice'
        if s.endswith(word) and len(s) > len(word) + 2:
            return s[:-len(word)]
    return s


def gateway(ctx: Context) -> list[Hypothesis]:
    """A gateway route whose name says one service and whose target is another (or nothing that exists); and
    user requests failing with 404 at one entry service while its pods are healthy."""
    out: list[Hypothesis] = []
    by_entry: dict[str, list[Fact]] = {}
    for a in ctx.e.anomalies:
        if a.category == "REQUEST_ERRORS" and "404" in a.detail:
            by_entry.setdefault(a.entity, []).append(Fact(source="alert", ref=f"requests to {a.entity}", text=a.detail))
    services = set(ctx.services) | set(ctx.workloads)
    affixes = _system_affixes(sorted(services))
    stems = {_stem(s, affixes): s for s in sorted(services)}
    for route in ctx.e.routes:
        want = stems.get(_stem(route.id, affixes)) if route.id else None
        if want is None:
            continue
        got, rid = _stem(route.target, affixes), _stem(route.id, affixes)
        if got == _stem(want, affixes) or (got and (got in rid or rid in got) and route.target in services):
            continue
        exists = route.target in services
        facts = [ctx.field_fact(f"{route.source} route {route.id}", f"{', '.join(route.paths)} -> {route.target}"
                                + ("" if exists else " (no such Service)"))] + by_entry.pop(want, [])
        out.append(ctx.hyp(Cause.gateway_route_wrong, ctx.app(want), 0.93,
                           f"the gateway sends {want}'s requests ({', '.join(route.paths)}) to {route.target}", facts,
                           route=route.id, source=route.source, target=route.target, right_target=want))
    for entry, facts in by_entry.items():
        healthy = entry not in ctx.troubled
        out.append(ctx.hyp(Cause.gateway_route_wrong, ctx.app(entry), 0.85 if healthy else 0.6,
                           f"requests for {entry} get 404: the gateway routes them to the wrong place", facts[:3]))
    return out


SIGNATURES = (database, port_conflict, name_resolution, env_addresses, gateway)
