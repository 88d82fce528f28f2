"""One remediation per workload at a time: a coordination.k8s.io/v1 Lease in the workload's namespace, held the way
leader election holds one (holderIdentity, renewTime, leaseDurationSeconds), written compare-and-swap.

    with RemediationLock(kube, target, holder=flow_run_id, on_wait=log_it):   # identify → contain → recover → verify
        ...

It lives in the cluster acted on, beside the guard's cooldowns (guard_state.py), so every entry point — a CLI run
with its own (even temporary) Prefect server, the runner, a worker's Job — waits for the same lock. The holder
renews it every third of the lease from a thread; a killed holder's lock comes back once its lease runs out
(LEASE_SECONDS after its last renewal), with nothing to repossess. Prefect-free: flows/concurrency.py wraps it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from k8s_runbooks.errors import RunbookError, TransientError
from k8s_runbooks.guard_state import MANAGED_BY
from k8s_runbooks.kube import leases
from k8s_runbooks.kube.client import Kube
from k8s_runbooks.models import WorkloadRef

log = logging.getLogger("k8s_runbooks.remediation_lock")
LOCK_PREFIX = "k8s-runbooks-remediation"
LEASE_SECONDS = 60
ANN_TARGET = "k8s-runbooks.io/target"


def lock_lease_name(kind: str, name: str) -> str:
    from k8s_runbooks.guard_state import cooldown_lease_name

    return cooldown_lease_name(kind, name).replace("k8s-runbooks-cooldown", LOCK_PREFIX, 1)


def holder_of(lease: dict[str, Any] | None, now: datetime | None = None) -> str | None:
    """Who holds the lock now: its holder while the lease runs, else None (free, released or expired)."""
    spec = (lease or {}).get("spec") or {}
    holder, renewed = spec.get("holderIdentity"), leases.parse_time(spec.get("renewTime"))
    if not holder or renewed is None:
        return None
    age = ((now or datetime.now(timezone.utc)) - renewed).total_seconds()
    return str(holder) if age < float(spec.get("leaseDurationSeconds") or LEASE_SECONDS) else None


class RemediationLock:
    def __init__(self, kube: Kube, target: WorkloadRef, holder: str, *, lease_seconds: int = LEASE_SECONDS,
                 poll_seconds: float = 2.0, on_wait: Callable[[str], None] | None = None) -> None:
        self.kube, self.target, self.holder = kube, target, holder
        self.namespace, self.name = target.namespace, lock_lease_name(target.kind, target.name)
        self.lease_seconds, self.poll_seconds, self.on_wait = lease_seconds, poll_seconds, on_wait
        self.lost = False
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, current: dict[str, Any] | None, spec: dict[str, Any]) -> None:
        body = {"metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(MANAGED_BY),
                             "annotations": {ANN_TARGET: f"{self.namespace}/{self.target.kind}/{self.target.name}"}},
                "spec": {"leaseDurationSeconds": self.lease_seconds, **spec}}
        leases.write(self.kube, self.namespace, current, body)

    def try_acquire(self) -> str | None:
        """Take the lock if it is free (or ours); otherwise the holder that has it (None: taken now)."""
        current = leases.read(self.kube, self.namespace, self.name)
        holder = holder_of(current)
        if holder is not None and holder != self.holder:
            return holder
        now = leases.micro_time()
        transitions = int(((current or {}).get("spec") or {}).get("leaseTransitions") or 0)
        try:
            self._write(current, {"holderIdentity": self.holder, "acquireTime": now, "renewTime": now,
                                  "leaseTransitions": transitions + (holder != self.holder)})
        except leases.Conflict:
            return "(changing)"  # someone wrote between our read and write: look again
        return None

    def acquire(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            try:
                holder = self.try_acquire()
            except TransientError as exc:  # the API is flaky: keep waiting (the holder's work is not ours to skip)
                holder = f"(unknown: {exc.message})"
            if holder is None:
                return
            if not told and self.on_wait is not None:
                self.on_wait(holder)
                told = True
            if deadline is not None and time.monotonic() >= deadline:
                raise TransientError(f"the remediation lock {self.namespace}/{self.name} is held by {holder}",
                                     hint="another run remediates this workload; retry when it is done")
            time.sleep(self.poll_seconds)

    def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours (expired and taken: `lost`)."""
        current = leases.read(self.kube, self.namespace, self.name)
        spec = (current or {}).get("spec") or {}
        if current is None or spec.get("holderIdentity") != self.holder:
            self.lost = True
            return False
        try:
            self._write(current, {**spec, "renewTime": leases.micro_time()})
        except leases.Conflict:
            return self.renew()  # written meanwhile (by us? by a taker?): decide on what is there now
        self.renewals += 1
        return True

    def release(self) -> None:
        """Free the lock if it is still ours (a lock someone took after ours expired is theirs)."""
        for _ in range(5):
            current = leases.read(self.kube, self.namespace, self.name)
            spec = (current or {}).get("spec") or {}
            if current is None or spec.get("holderIdentity") != self.holder:
                return
            try:
                self._write(current, {k: v for k, v in spec.items() if k not in ("holderIdentity", "renewTime")})
                return
            except leases.Conflict:
                continue

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.renew():
                    log.error("lost the remediation lock %s/%s: another run holds it now", self.namespace, self.name)
                    return
            except RunbookError as exc:  # retried at the next tick, while the lease still runs
                log.warning("renewing the remediation lock %s/%s failed: %s", self.namespace, self.name, exc)

    def __enter__(self) -> "RemediationLock":
        self.acquire()
        self._thread = threading.Thread(target=self._renew_loop, name=f"renew-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.release()
        except RunbookError as err:  # it expires by itself within a lease
            log.warning("could not release the remediation lock %s/%s: %s", self.namespace, self.name, err)
