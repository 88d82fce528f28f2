"""Probe signatures tell a wrong probe from a crash the probe only echoes."""

from __future__ import annotations

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.engine import diagnose

NS = "shop"


def _evidence(*, probe_port: int, restarts: int, exit_code: int | None) -> ev.Evidence:
    probe = ev.Probe(kind="http", port=probe_port, path="/healthz")
    tpl = ev.PodSpec(labels={"app": "web"}, containers=[ev.Container(name="web", image="shop:1", ports=[ev.ContainerPort(port=8080)], readiness=probe)])
    last = ev.ContainerState(state="terminated", reason="Error", exit_code=exit_code) if exit_code is not None else None
    pods = [ev.Pod(name=f"web-7d9-{i}", namespace=NS, workload="web", phase="Running",
                   status="CrashLoopBackOff" if restarts else "Running", labels={"app": "web"},
                   owner=ev.ObjectRef(kind="ReplicaSet", name="web-7d9", namespace=NS), last_restart_age_seconds=20 if restarts else None,
                   containers=[ev.ContainerStatus(name="web", ready=False, restart_count=restarts, last_state=last,
                                                  state=ev.ContainerState(state="waiting", reason="CrashLoopBackOff") if restarts
                                                  else ev.ContainerState(state="running"))]) for i in "ab"]
    events = [ev.Event(object=ev.ObjectRef(kind="Pod", name=p.name, namespace=NS), type="Warning", reason="Unhealthy", count=6,
                       message=f"Readiness probe failed: Get \"http://{i}:{probe_port}/healthz\": dial tcp {i}:{probe_port}: connect: connection refused",
                       source="kubelet") for p, i in zip(pods, ("10.0.0.4", "10.0.0.5"))]
    if restarts:
        events += [ev.Event(object=ev.ObjectRef(kind="Pod", name=p.name, namespace=NS), type="Warning", reason="BackOff", count=restarts,
                            message="Back-off restarting failed container web in pod " + p.name, source="kubelet") for p in pods]
    return ev.Evidence(namespace=NS, pods=pods, events=events,
                       workloads=[ev.Workload(name="web", namespace=NS, replicas=2, ready_replicas=0, template=tpl)],
                       replicasets=[ev.ReplicaSet(name="web-7d9", namespace=NS, owner="web", revision=1, template=tpl)])


def _causes(e: ev.Evidence) -> list[str]:
    return [h.cause.value for h in diagnose(e, "Service abnormal restart.").hypotheses]


def test_a_crash_is_not_blamed_on_the_readiness_probe_it_fails_while_down() -> None:
    causes = _causes(_evidence(probe_port=8080, restarts=5, exit_code=1))
    assert causes and causes[0] == "app-crash" and "readiness-probe-wrong-port" not in causes, causes


def test_a_readiness_probe_on_a_port_nothing_listens_on_is_still_found_in_a_crash_loop() -> None:
    assert _causes(_evidence(probe_port=9090, restarts=5, exit_code=1))[:1] != [] and \
        "readiness-probe-wrong-port" in _causes(_evidence(probe_port=9090, restarts=5, exit_code=1))


def test_a_running_container_failing_readiness_is_a_probe_fault() -> None:
    assert _causes(_evidence(probe_port=9090, restarts=0, exit_code=None))[0] == "readiness-probe-wrong-port"
