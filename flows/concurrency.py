"""One remediation per target at a time: a Lease in the workload's namespace (k8s_runbooks/remediation_lock.py).

    with remediation_slot(ctx.target):      # around identify → contain → recover → verify (flows/pod_crash.py)
        return drive(ctx, steps, communicate)

Two runs for the same Deployment then never remediate concurrently, from whichever entry point (an alert's run on
the workers, a CLI run with its own Prefect server, a run in another installation acting on the same cluster): the
second run waits (its state stays Running, its log says who holds the slot) until the first releases it, and only
then reads the cluster, so it sees the first run's fix instead of acting on stale evidence (e.g. undoing a
roll-back). The holder renews the lease every LEASE_SECONDS / 3; a killed holder's slot comes back LEASE_SECONDS
after its last renewal. The lock is keyed by cluster (it lives there), namespace, kind and name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.runtime import flow_run

from k8s_runbooks.kube.client import get_kube
from k8s_runbooks.models import WorkloadRef
from k8s_runbooks.remediation_lock import LEASE_SECONDS, RemediationLock, lock_lease_name

__all__ = ["LEASE_SECONDS", "remediation_slot", "slot_name"]


def slot_name(namespace: str, name: str, kind: str = "Deployment") -> str:
    """`<namespace>/<Lease name>` of the workload's remediation lock (what `kubectl get lease -n NS` shows)."""
    return f"{namespace}/{lock_lease_name(kind, name)}"


@contextmanager
def remediation_slot(target: WorkloadRef) -> Iterator[None]:
    log = get_run_logger()
    name = slot_name(target.namespace, target.name, target.kind)
    holder = str(flow_run.get_id() or f"no-flow-run-{uuid.uuid4()}")
    log.info("waiting for the remediation slot %s (one remediation per workload at a time)", name)
    lock = RemediationLock(get_kube(), target, holder,
                           on_wait=lambda who: log.info("the remediation slot %s is held by flow run %s", name, who))
    with lock:
        log.info("holding the remediation slot %s", name)
        yield
    if lock.lost:
        log.error("the remediation slot %s was lost while held (its lease ran out and another run took it)", name)
    log.info("released the remediation slot %s", name)
