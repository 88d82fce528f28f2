"""One remediation per target at a time: a Prefect global concurrency limit keyed on namespace/workload.

    with remediation_slot(ctx.target):      # around identify → contain → recover → verify (flows/pod_crash.py)
        return drive(ctx, steps, communicate)

Two alerts for the same Deployment then never remediate concurrently: the second run waits (its state
stays Running, its log says why) until the first releases the slot, and only then reads the cluster, so
it sees the first run's fix instead of acting on stale evidence (e.g. undoing a roll-back).
The limit (`remediate-<namespace>-<name>`, limit 1) is created on demand; `strict=True` makes a missing
or unreachable limit an error instead of silently running unguarded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from k8s_runbooks.models import WorkloadRef

# A slot is held while the action runs and the workload recovers (recovery_timeout_seconds <= 3600): Prefect's
# renewal thread in the holder's process renews the lease every 3/4 of it, so a live holder keeps the slot
# however long it needs. The lease only bounds a dead holder's orphaned slot: its slot comes back at most
# LEASE_SECONDS after its last renewal, plus one pass of the server's repossessor (15 s by default).
# 60 s is the server's minimum; a renewal may then be up to 15 s late (more until the repossessor's next pass)
# before the slot is lost, and a lost lease stops the holder (strict=True) rather than letting it run unguarded.
LEASE_SECONDS = 60.0


def slot_name(namespace: str, name: str) -> str:
    """Both parts are validated Kubernetes names (no '/', which the limit's URL path cannot carry)."""
    return f"remediate-{namespace}-{name}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit `name` if it does not exist (idempotent under races)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
        except ObjectAlreadyExists:
            pass  # another run created it between the read and the create


@contextmanager
def remediation_slot(target: WorkloadRef) -> Iterator[None]:
    name = slot_name(target.namespace, target.name)
    ensure_limit(name)
    log = get_run_logger()
    log.info("waiting for the remediation slot %s (one remediation per workload at a time)", name)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        log.info("holding the remediation slot %s", name)
        yield
    log.info("released the remediation slot %s", name)
