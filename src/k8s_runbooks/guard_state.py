"""The guard's shared state, kept in the cluster it acts on, where every entry point sees it.

A CLI run from any directory, the sandbox's runner, a Kubernetes worker's Job on GKE: whichever process
acts on shop/checkout reads and writes the same objects, in shop, on that cluster. So the key of every
record is (cluster, namespace, kind, name) by construction, and no shared volume or file lock is needed.

- **Cooldown per workload**: a coordination.k8s.io/v1 Lease `k8s-runbooks-cooldown.<kind>.<name>` in the
  workload's namespace. `spec.acquireTime` is when the last destructive action was taken, `holderIdentity`
  the flow run that took it, `leaseDurationSeconds` the cooldown it was taken under.
- **Pod budget per flow run**: the Lease `k8s-runbooks-budgets` in the namespace acted on; its annotation
  `k8s-runbooks.io/pods-touched` maps flow run id -> pods touched (entries older than a day are pruned).
  A run acts on one namespace (its target), so this is the run's budget.

Every write is a compare-and-swap: it carries the resourceVersion of the read it was decided on, and a
concurrent writer gets 409 Conflict (or AlreadyExists on create), re-reads and decides again. Two entry
points racing on one workload therefore give one action and one cooldown.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from k8s_runbooks.errors import TransientError
from k8s_runbooks.kube import leases
from k8s_runbooks.kube.client import Kube
from k8s_runbooks.models import Action

COOLDOWN_PREFIX = "k8s-runbooks-cooldown"
BUDGET_LEASE = "k8s-runbooks-budgets"
MANAGED_BY = {"app.kubernetes.io/managed-by": "k8s-runbooks"}
ANN_TARGET = "k8s-runbooks.io/target"
ANN_ACTION = "k8s-runbooks.io/action"
ANN_RUN = "k8s-runbooks.io/flow-run-id"
ANN_BUDGET = "k8s-runbooks.io/pods-touched"
BUDGET_TTL_SECONDS = 24 * 3600
CONFLICT_RETRIES = 10


def cooldown_lease_name(kind: str, name: str) -> str:
    """`k8s-runbooks-cooldown.deployment.checkout`; names too long for an object name are hashed."""
    base = f"{COOLDOWN_PREFIX}.{kind.lower()}."
    if len(base) + len(name) <= 253:
        return base + name
    return base + hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass
class Claim:
    """What `GuardState.claim` took, so `release` can give back exactly that."""

    refused: str | None = None
    cooldown_at: str | None = None  # the acquireTime written, if a cooldown was claimed
    pods: int = 0


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.05 * (attempt + 1)))


def _budgets(lease: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    raw = ((lease or {}).get("metadata") or {}).get("annotations", {}).get(ANN_BUDGET)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}  # a hand-edited, unreadable annotation must not block remediation forever; the audit is the record
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


class GuardState:
    """Cooldowns and per-run budgets in Leases of the cluster `kube` talks to."""

    def __init__(self, kube: Kube, cooldown_seconds: float, max_pods_per_run: int) -> None:
        self.kube = kube
        self.cooldown_seconds = cooldown_seconds
        self.max_pods_per_run = max_pods_per_run

    # ------------------------------------------------------------------------------ reads
    def _cooldown_refusal(self, action: Action, lease: dict[str, Any] | None, flow_run_id: str | None) -> str | None:
        if lease is None:
            return None
        spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
        at = leases.parse_time(spec.get("acquireTime"))
        if at is None:
            return None
        ago = (datetime.now(timezone.utc) - at).total_seconds()
        run = (meta.get("annotations") or {}).get(ANN_RUN)
        if ago >= self.cooldown_seconds or (flow_run_id is not None and run == flow_run_id):
            return None
        kind = (meta.get("annotations") or {}).get(ANN_ACTION, "an action")
        return (f"cooldown: {kind} on {action.target} {max(ago, 0):.0f}s ago (flow run {run or '-'}); next action "
                f"allowed in {self.cooldown_seconds - ago:.0f}s (Lease {meta.get('namespace')}/{meta.get('name')})")

    def _budget_refusal(self, used: int, pods: int, flow_run_id: str) -> str | None:
        if used + pods > self.max_pods_per_run:
            return (f"blast radius: flow run {flow_run_id} already touched {used} pods; {pods} more would exceed "
                    f"max_pods_per_run={self.max_pods_per_run}")
        return None

    def _checks_cooldown(self, exempt: bool) -> bool:
        return not exempt and self.cooldown_seconds > 0

    def refusal(self, action: Action, pods: int, cooldown_exempt: bool, flow_run_id: str | None) -> str | None:
        """Why the action would be refused now by budget or cooldown (None: it would not); reads only."""
        ns = action.target.namespace
        if flow_run_id and pods:
            used = int(_budgets(leases.read(self.kube, ns, BUDGET_LEASE)).get(flow_run_id, {}).get("pods", 0))
            if why := self._budget_refusal(used, pods, flow_run_id):
                return why
        if self._checks_cooldown(cooldown_exempt):
            lease = leases.read(self.kube, ns, cooldown_lease_name(action.target.kind, action.target.name))
            return self._cooldown_refusal(action, lease, flow_run_id)
        return None

    # ------------------------------------------------------------------------------ writes
    def claim(self, action: Action, pods: int, cooldown_exempt: bool, flow_run_id: str | None) -> Claim:
        """Re-check and take the budget and the cooldown atomically; `Claim.refused` says why not."""
        if why := self.refusal(action, pods, cooldown_exempt, flow_run_id):
            return Claim(refused=why)
        claim = Claim()
        if self._checks_cooldown(cooldown_exempt):
            claim = self._claim_cooldown(action, flow_run_id)
            if claim.refused:
                return claim
        if flow_run_id and pods:
            try:
                why = self._add_budget(action.target.namespace, flow_run_id, pods)
            except BaseException:
                self._release_cooldown(action, claim)
                raise
            if why:
                self._release_cooldown(action, claim)
                return Claim(refused=why)
            claim.pods = pods
        return claim

    def release(self, action: Action, claim: Claim, flow_run_id: str | None) -> None:
        """Give back what `claim` took (the action failed): a retry must not be refused by our own claim."""
        if flow_run_id and claim.pods:
            self._add_budget(action.target.namespace, flow_run_id, -claim.pods)
        self._release_cooldown(action, claim)

    def _claim_cooldown(self, action: Action, flow_run_id: str | None) -> Claim:
        ns, name = action.target.namespace, cooldown_lease_name(action.target.kind, action.target.name)
        for attempt in range(CONFLICT_RETRIES):
            current = leases.read(self.kube, ns, name)
            if why := self._cooldown_refusal(action, current, flow_run_id):
                return Claim(refused=why)
            now = leases.micro_time()
            annotations = {ANN_TARGET: f"{ns}/{action.target.kind}/{action.target.name}", ANN_ACTION: action.kind.value}
            if flow_run_id:
                annotations[ANN_RUN] = flow_run_id
            body = {"metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY), "annotations": annotations},
                    "spec": {"holderIdentity": flow_run_id or "k8s-runbooks", "acquireTime": now, "renewTime": now,
                             "leaseDurationSeconds": max(1, math.ceil(self.cooldown_seconds))}}
            try:
                leases.write(self.kube, ns, current, body)
                return Claim(cooldown_at=now)
            except leases.Conflict:
                _backoff(attempt)  # another entry point wrote first: read what it did and decide again
        raise TransientError(f"the cooldown Lease {ns}/{name} kept changing under {CONFLICT_RETRIES} attempts",
                             hint="another process writes it in a loop; retry later")

    def _release_cooldown(self, action: Action, claim: Claim) -> None:
        if claim.cooldown_at is None:
            return
        ns, name = action.target.namespace, cooldown_lease_name(action.target.kind, action.target.name)
        for attempt in range(CONFLICT_RETRIES):
            current = leases.read(self.kube, ns, name)
            if current is None or (current.get("spec") or {}).get("acquireTime") != claim.cooldown_at:
                return  # someone else's cooldown by now: not ours to clear
            cleared = {**current, "spec": {}}
            cleared["metadata"] = {**current["metadata"], "annotations": {
                k: v for k, v in (current["metadata"].get("annotations") or {}).items() if k == ANN_TARGET}}
            try:
                leases.replace(self.kube, cleared)
                return
            except leases.Conflict:
                _backoff(attempt)

    def _add_budget(self, namespace: str, flow_run_id: str, pods: int) -> str | None:
        """Add `pods` (negative: give back) to the run's budget; the refusal if it would exceed the maximum."""
        for attempt in range(CONFLICT_RETRIES):
            current = leases.read(self.kube, namespace, BUDGET_LEASE)
            budgets = _budgets(current)
            used = int(budgets.get(flow_run_id, {}).get("pods", 0))
            if pods > 0 and (why := self._budget_refusal(used, pods, flow_run_id)):
                return why
            now = time.time()
            budgets = {k: v for k, v in budgets.items() if now - float(v.get("at", 0)) < BUDGET_TTL_SECONDS}
            budgets[flow_run_id] = {"pods": max(0, used + pods), "at": now}
            annotations = {**((current or {}).get("metadata", {}).get("annotations") or {}),
                           ANN_BUDGET: json.dumps(budgets, sort_keys=True, separators=(",", ":"))}
            body = {"metadata": {"name": BUDGET_LEASE, "namespace": namespace, "labels": dict(MANAGED_BY),
                                 "annotations": annotations},
                    "spec": {"holderIdentity": flow_run_id, "renewTime": leases.micro_time(),
                             "leaseDurationSeconds": BUDGET_TTL_SECONDS}}
            try:
                leases.write(self.kube, namespace, current, body)
                return None
            except leases.Conflict:
                _backoff(attempt)
        raise TransientError(f"the budget Lease {namespace}/{BUDGET_LEASE} kept changing under {CONFLICT_RETRIES} "
                             "attempts", hint="many runs write it at once; retry later")
