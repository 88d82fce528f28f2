"""Where a workload is configured to connect (Context.settings_of / addresses_of) and the signatures that judge it:
a database port no Service serves, an unknown host of another namespace, a gateway route read through a naming
convention. Built from synthetic evidence."""

from __future__ import annotations

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.engine import diagnose

NS = "shop"


def _workload(name: str, env: list[ev.EnvVar] | None = None, env_from: list[ev.EnvFrom] | None = None) -> ev.Workload:
    tpl = ev.PodSpec(labels={"app": name}, containers=[ev.Container(name=name, image=f"{name}:1", env=env or [], env_from=env_from or [])])
    return ev.Workload(name=name, namespace=NS, replicas=1, ready_replicas=1, template=tpl)


def _crashing(name: str, lines: list[str]) -> tuple[list[ev.Pod], list[ev.LogExcerpt]]:
    pod = ev.Pod(name=f"{name}-7d9f8-abcde", namespace=NS, workload=name, phase="Running", status="CrashLoopBackOff",
                 labels={"app": name}, owner=ev.ObjectRef(kind="ReplicaSet", name=f"{name}-7d9f8", namespace=NS),
                 last_restart_age_seconds=30,
                 containers=[ev.ContainerStatus(name=name, ready=False, restart_count=4,
                                                state=ev.ContainerState(state="waiting", reason="CrashLoopBackOff"),
                                                last_state=ev.ContainerState(state="terminated", reason="Error", exit_code=1))])
    return [pod], [ev.LogExcerpt(workload=name, pod=pod.name, lines=lines)]


def _service(name: str, port: int) -> ev.Service:
    return ev.Service(name=name, namespace=NS, selector={"app": name}, ports=[ev.ServicePort(port=port, target_port=port)])


def _addresses(e: ev.Evidence, workload: str) -> dict[str, tuple[str, int | None, str]]:
    return {a.variable: (a.host, a.port, a.where) for a in Context(e).addresses_of(workload)}


# ------------------------------------------------------------------------------------------- settings and addresses


def test_addresses_come_from_literal_env_envfrom_and_keyed_refs() -> None:
    env = [ev.EnvVar(name="CACHE_URL", value="redis://:hunter2@cache.shop.svc:6379/0"),
           ev.EnvVar(name="LOG_LEVEL", value="info"),
           ev.EnvVar(name="ORDERS_DB", config_map_ref=ev.KeyRef(name="orders-cm", key="url"))]
    e = ev.Evidence(namespace=NS, workloads=[_workload("api", env, [ev.EnvFrom(kind="Secret", name="db-conn")])],
                    secrets=[ev.NamedKeys(name="db-conn", key_names=["DB_HOST", "DB_PORT"], coordinates={"DB_HOST": "mysql", "DB_PORT": "3307"}),
                             ev.NamedKeys(name="unrelated", coordinates={"OTHER_HOST": "elsewhere"})],
                    config_maps=[ev.NamedKeys(name="orders-cm", coordinates={"url": "jdbc:mysql://orders-db:3306/orders", "other": "x:1"})])
    got = _addresses(e, "api")
    assert got["CACHE_URL"] == ("cache.shop.svc", 6379, "deployment/api env CACHE_URL")
    assert got["DB_HOST"] == ("mysql", 3307, "secret/db-conn DB_HOST")  # host paired with its port variable
    assert got["ORDERS_DB"] == ("orders-db", 3306, "configmap/orders-cm url")  # the env name, not the key
    assert "LOG_LEVEL" not in got and "OTHER_HOST" not in got and "other" not in got  # not this workload's, or no address
    [db] = [a for a in Context(e).addresses_of("api") if a.variable == "DB_HOST"]
    assert (db.port_variable, db.port_where, db.short_host) == ("DB_PORT", "secret/db-conn DB_PORT", "mysql")


def test_a_host_without_a_port_and_a_value_that_is_no_host_are_told_apart() -> None:
    env = [ev.EnvVar(name="SMTP_SERVER", value="mail.example.com"), ev.EnvVar(name="GREETING_HOST", value="hello world"),
           ev.EnvVar(name="UPSTREAM_ADDR", value="catalog:8080")]
    got = _addresses(ev.Evidence(namespace=NS, workloads=[_workload("api", env)]), "api")
    assert got["SMTP_SERVER"] == ("mail.example.com", None, "deployment/api env SMTP_SERVER")
    assert got["UPSTREAM_ADDR"] == ("catalog", 8080, "deployment/api env UPSTREAM_ADDR")
    assert "GREETING_HOST" not in got


def test_an_unknown_workload_has_no_settings() -> None:
    assert Context(ev.Evidence(namespace=NS)).settings_of("ghost") == []


# ------------------------------------------------------------------------------------------- database port


def _db_case(port: str, lines: list[str]) -> ev.Evidence:
    pods, logs = _crashing("orders", lines)
    secret = ev.NamedKeys(name="orders-db", key_names=["MYSQL_HOST", "MYSQL_PORT", "MYSQL_PASSWORD"],
                          coordinates={"MYSQL_HOST": "mysql", "MYSQL_PORT": port})
    return ev.Evidence(namespace=NS, pods=pods, logs=logs, secrets=[secret],
                       workloads=[_workload("orders", env_from=[ev.EnvFrom(kind="Secret", name="orders-db")]), _workload("mysql")],
                       services=[_service("mysql", 3306)])


def test_a_database_port_the_service_does_not_serve_is_the_cause_whatever_the_client_says() -> None:
    # A Go client's wording: neither 'jdbc' nor 'mysql' nor 'Connection refused' in the log.
    d = diagnose(_db_case("3307", ["dial tcp 10.0.0.9:3307: connect: connection timed out"]), "Service abnormal restart.")
    top = d.hypotheses[0]
    assert (top.cause.value, top.object.name) == ("db-wrong-port", "orders"), [(h.cause.value, h.object.name) for h in d.hypotheses]
    assert any(f.ref == "secret/orders-db MYSQL_PORT" and "3307" in f.text for f in top.facts), top.facts
    assert any(f.ref == "service/mysql ports" and "3306" in f.text for f in top.facts), top.facts


def test_a_database_port_the_service_serves_is_not_blamed() -> None:
    d = diagnose(_db_case("3306", ["dial tcp 10.0.0.9:3306: connect: connection timed out"]), "Service abnormal restart.")
    assert "db-wrong-port" not in [h.cause.value for h in d.hypotheses]


def test_database_errors_in_other_drivers_wording_are_recognised() -> None:
    for line, cause in (("pymongo.errors.OperationFailure: Exception authenticating MongoCredential", "db-auth-failed"),
                        ("WRONGPASS invalid username-password pair or user is disabled.", "db-auth-failed"),
                        ("Error 1045: Access denied", "db-auth-failed"),
                        ("READONLY You can't write against a read only replica.", "db-read-only")):
        pods, logs = _crashing("orders", [line])
        e = ev.Evidence(namespace=NS, pods=pods, logs=logs, workloads=[_workload("orders"), _workload("mysql")])
        causes = [h.cause.value for h in diagnose(e, "Service abnormal restart.").hypotheses]
        assert cause in causes[:2], (line, causes)


def test_the_database_is_where_the_callers_database_settings_point_whatever_its_name() -> None:
    # Nothing in the database's name or (unlisted) image says "database"; the callers' settings do.
    line = "java.sql.SQLException: The MySQL server is running with the --read-only option so it cannot execute this statement"
    pods, logs = [], []
    for caller in ("orders", "billing"):
        p, lg = _crashing(caller, [line])
        pods, logs = pods + p, logs + lg
    secret = ev.NamedKeys(name="app-db", key_names=["ORDERS_MYSQL_HOST", "ORDERS_MYSQL_PORT"],
                          coordinates={"ORDERS_MYSQL_HOST": "ledger-primary", "ORDERS_MYSQL_PORT": "3306"})
    ledger = ev.Workload(name="ledger", namespace=NS, kind="StatefulSet", replicas=1, ready_replicas=1,
                         template=ev.PodSpec(labels={"app": "ledger"}))
    e = ev.Evidence(namespace=NS, pods=pods, logs=logs, secrets=[secret],
                    workloads=[_workload(c, env_from=[ev.EnvFrom(kind="Secret", name="app-db")]) for c in ("orders", "billing")]
                    + [ledger, _workload("cache")],
                    services=[ev.Service(name="ledger-primary", namespace=NS, selector={"app": "ledger"}, ports=[ev.ServicePort(port=3306)]),
                              _service("cache", 6379)])
    top = diagnose(e, "Service abnormal restart.").hypotheses[0]
    assert (top.cause.value, top.object.kind, top.object.name) == ("db-read-only", "StatefulSet", "ledger"), top


# ------------------------------------------------------------------------------------------- names


def test_an_unresolvable_host_of_another_namespace_is_not_blamed_on_this_ones_config() -> None:
    def causes(host: str) -> list[str]:
        pods, logs = _crashing("api", [f"dial tcp: lookup {host} on 10.96.0.10:53: no such host"])
        e = ev.Evidence(namespace=NS, pods=pods, logs=logs, workloads=[_workload("api", [ev.EnvVar(name="PEER_HOST", value=host)])])
        return [h.cause.value for h in diagnose(e, "Partial Service Unreachability.").hypotheses]

    config = {"dns-resolution-failed", "env-address-wrong"}
    assert causes("catalgo")[0] in config  # no Service of this namespace has that name: the setting is wrong
    assert not config & set(causes("telemetry.monitoring"))  # another namespace's Service: not judged from this one


def test_a_gateway_route_is_read_through_the_systems_naming_convention() -> None:
    names = ["acme-cart-api", "acme-order-api", "acme-user-api", "acme-gateway-api"]
    def routes(target: str) -> list[tuple[str, str]]:
        e = ev.Evidence(namespace=NS, workloads=[_workload(n) for n in names], services=[_service(n, 8080) for n in names],
                        routes=[ev.Route(source="configmap/gateway routes", id="order", paths=["/api/v1/orderservice/**"], target=target)])
        return [(h.cause.value, h.object.name) for h in diagnose(e, "Partial Service Unreachability.").hypotheses]

    assert ("gateway-route-wrong", "acme-order-api") in routes("acme-cart-api")
    assert not any(c == "gateway-route-wrong" for c, _ in routes("acme-order-api"))
