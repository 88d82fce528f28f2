"""A quota refusal is a cause only while it still blocks: events outlive the quota and the shortfall by an hour."""

from __future__ import annotations

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.engine import diagnose

NS = "shop"
REFUSAL = ('Error creating: pods "web-7d9-x1" is forbidden: exceeded quota: compute-quota, requested: requests.cpu=50m, '
           'used: requests.cpu=200m, limited: requests.cpu=200m')


def _evidence(*, ready: int, quota: bool | None) -> ev.Evidence:
    """web wants 2 pods and has `ready`; a FailedCreate quota refusal 2 minutes old; the quota present, deleted
    (False) or not readable (None)."""
    tpl = ev.PodSpec(labels={"app": "web"}, containers=[ev.Container(name="web", image="shop:1")])
    pods = [ev.Pod(name=f"web-7d9-{i}", namespace=NS, workload="web", phase="Running", status="Running", labels={"app": "web"},
                   owner=ev.ObjectRef(kind="ReplicaSet", name="web-7d9", namespace=NS),
                   containers=[ev.ContainerStatus(name="web", ready=True, state=ev.ContainerState(state="running"))])
            for i in "ab"[:ready]]
    events = [ev.Event(object=ev.ObjectRef(kind="ReplicaSet", name="web-7d9", namespace=NS), type="Warning",
                       reason="FailedCreate", count=4, message=REFUSAL, source="replicaset-controller", age_seconds=120)]
    quotas = [ev.ResourceQuota(name="compute-quota", namespace=NS, hard={"requests.cpu": "200m"}, used={"requests.cpu": "200m"})]
    return ev.Evidence(namespace=NS, pods=pods, events=events, quotas=quotas if quota else [], quotas_listed=quota is not None,
                       workloads=[ev.Workload(name="web", namespace=NS, replicas=2, ready_replicas=ready, updated_replicas=ready,
                                              template=tpl)],
                       replicasets=[ev.ReplicaSet(name="web-7d9", namespace=NS, owner="web", revision=1, template=tpl)])


def _causes(e: ev.Evidence) -> list[str]:
    return [h.cause.value for h in diagnose(e, "Service latency is high.").hypotheses]


def test_a_quota_that_still_blocks_a_short_workload_is_the_cause() -> None:
    assert _causes(_evidence(ready=1, quota=True))[:1] == ["quota-cpu-exceeded"]


def test_the_refusal_is_still_read_when_quotas_cannot_be_listed() -> None:
    assert "quota-cpu-exceeded" in _causes(_evidence(ready=1, quota=None))


def test_a_refusal_by_a_quota_since_deleted_is_history() -> None:
    assert "quota-cpu-exceeded" not in _causes(_evidence(ready=1, quota=False))


def test_a_refusal_does_not_blame_a_workload_that_has_every_pod_it_wants() -> None:
    assert "quota-cpu-exceeded" not in _causes(_evidence(ready=2, quota=True))
