"""The one path every destructive action takes.

`Guard.check` decides, in this order: protected namespace → target exists → blast radius (per action,
per flow run, never all replicas at once unless `action.allow_all_replicas`) → cooldown per target →
approval mode `dry-run`. The containment kinds have a check function each (`_check_flags`, `_check_redirect`,
`_check_restore`) and pass through the same budget, cooldown, dry-run and audit. `Guard.execute` runs the check,
executes through `kube.workloads` when allowed, and appends exactly one `AuditRecord` (who/what/when/why +
outcome) to `state_dir/audit.jsonl`, then hands it to the audit hooks (the tasks layer installs one that emits
it as a Prefect event).

The state several entry points share — the cooldown per workload and the pod budget per flow run — lives
in the cluster acted on, as Leases written with optimistic concurrency (`guard_state.py`), so a CLI run,
the runner and a worker's Job all see the same cooldown, and two of them racing on one workload give one
action.

Cooldown is about repeated remediation of one target by *different* runs (alert storms, flapping); the
steps of one run (contain, then roll back) are bounded by the per-run pod budget instead. Scaling up
touches no existing pod, so it is exempt from the cooldown and counts zero pods.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from k8s_runbooks.errors import NotFound, RunbookError
from k8s_runbooks.guard_state import Claim, GuardState
from k8s_runbooks.kube import workloads
from k8s_runbooks.kube.client import Kube, current_context, get_kube
from k8s_runbooks.kube.pods import current_and_previous, deployment_pods, deployment_replicasets, read_deployment
from k8s_runbooks.models import Action, ActionKind, ActionResult, ApprovalMode, AuditRecord, Decision, utcnow
from k8s_runbooks.settings import Settings, get_settings

AUDIT_FILE = "audit.jsonl"
log = logging.getLogger("k8s_runbooks.guard")

AuditHook = Callable[[AuditRecord], None]
_audit_hooks: list[AuditHook] = []


def add_audit_hook(hook: AuditHook) -> None:
    """Call `hook(record)` after every audit record is written (idempotent). The core stays Prefect-free: the
    tasks layer installs the hook that emits each record as a Prefect event."""
    if hook not in _audit_hooks:
        _audit_hooks.append(hook)


@dataclass
class _Verdict:
    decision: Decision
    reason: str
    pods: int = 0  # pods this action touches (blast radius)
    cooldown_exempt: bool = False
    claim: Claim = field(default_factory=Claim)  # what execute() took in the cluster's guard state


class Guard:
    def __init__(self, settings: Settings | None = None, kube: Kube | None = None) -> None:
        self.settings = settings or get_settings()
        self._kube = kube
        self.state_dir = Path(self.settings.state_dir)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = get_kube(self.settings)
        return self._kube

    @property
    def state(self) -> GuardState:
        return GuardState(self.kube, self.settings.cooldown_seconds, self.settings.max_pods_per_run)

    # -------------------------------------------------------------------------------- decisions
    def _blast(self, action: Action) -> _Verdict:
        """Target existence and blast radius (pods touched by this action)."""
        ns, name = action.target.namespace, action.target.name
        try:
            dep = read_deployment(self.kube, ns, name)
        except NotFound:
            return _Verdict(Decision.refused, f"target {action.target} does not exist")
        desired = dep.spec.replicas if dep.spec.replicas is not None else 1
        all_flag = "set allow_all_replicas on the action to allow it explicitly"
        s = self.settings
        if action.kind is ActionKind.delete_pods:
            if not action.pods:
                return _Verdict(Decision.refused, "delete_pods names no pods")
            checked = self._check_pod_deletion(action, dep)
            if isinstance(checked, _Verdict):
                return checked
            count = checked
        elif action.kind is ActionKind.scale:
            if action.replicas is None or action.replicas < 0:
                return _Verdict(Decision.refused, "scale needs a target replica count >= 0")
            if action.replicas == 0 and desired > 0 and not action.allow_all_replicas:
                return _Verdict(Decision.refused, f"scaling {action.target} to 0 removes all {desired} pods; {all_flag}")
            count = max(0, desired - action.replicas)
            if action.replicas >= desired:
                return _Verdict(Decision.allowed, "", pods=0, cooldown_exempt=True)
        elif action.kind is ActionKind.rollout_undo:
            _current, previous = current_and_previous(dep, deployment_replicasets(self.kube, dep))
            if previous is None:
                return _Verdict(Decision.refused, f"{action.target} has no previous ReplicaSet to roll back to")
            count = desired  # a rolling update replaces every pod (one batch at a time)
        elif action.kind is ActionKind.inject_fault:
            return self._drill_blast(action, dep, desired)
        elif action.kind is ActionKind.remove_fault:
            # Restorative (a drill's rollback): always allowed outside protected namespaces, touches no budget.
            return _Verdict(Decision.allowed, "", pods=0, cooldown_exempt=True)
        elif action.kind is ActionKind.set_flags:
            return self._check_flags(action, dep)
        elif action.kind is ActionKind.redirect_traffic:
            return self._check_redirect(action, dep)
        elif action.kind is ActionKind.restore_traffic:
            return self._check_restore(action)
        elif action.kind is ActionKind.patch_resources:
            if not action.patch:
                return _Verdict(Decision.refused, "patch_resources needs a patch")
            try:
                workloads.resources_patch(action.patch)
            except RunbookError as exc:
                return _Verdict(Decision.refused, str(exc))
            count = desired
        else:  # rollout_restart
            count = desired
        if count > s.max_pods_per_action:
            return _Verdict(
                Decision.refused,
                f"blast radius: {action.kind.value} touches {count} pods, more than max_pods_per_action={s.max_pods_per_action}",
            )
        return _Verdict(Decision.allowed, "", pods=count)

    def _check_pod_deletion(self, action: Action, dep: Any) -> _Verdict | int:
        """Deleting `action.pods` (a runbook's delete_pods or a drill's pod kill): only live pods of the
        workload, never every replica at once unless the action allows it. The pod count, or a refusal."""
        live = {p.metadata.name for p in deployment_pods(self.kube, dep) if p.metadata.deletion_timestamp is None}
        foreign = sorted(set(action.pods) - live)
        if foreign:
            return _Verdict(Decision.refused, f"pods {', '.join(foreign)} are not live pods of {action.target}")
        count = len(set(action.pods))
        if count >= max(len(live), 1) and not action.allow_all_replicas:
            return _Verdict(Decision.refused, f"would delete all {count} pods of {action.target} at once; "
                                              "set allow_all_replicas on the action to allow it explicitly")
        return count

    def _drill_blast(self, action: Action, dep: Any, desired: int) -> _Verdict:
        """A drill fault: only in namespaces labelled for drills; pod kills never take every replica unless
        asked; exempt from the cooldown so the response being drilled is not refused because of the drill."""
        from k8s_runbooks.drills.kube_faults import namespace_allows_drills
        from k8s_runbooks.drills.model import validate_env

        allowed, why = namespace_allows_drills(self.kube, action.target.namespace)
        if not allowed:
            return _Verdict(Decision.refused, why)
        fault = (action.patch or {}).get("fault")
        if action.pods:
            checked = self._check_pod_deletion(action, dep)
            if isinstance(checked, _Verdict):
                return checked
            count = checked
        elif fault is not None:
            from k8s_runbooks.drills.cluster_faults import CLUSTER_FAULTS

            from k8s_runbooks.drills.fault_rbac import refusal

            if fault not in CLUSTER_FAULTS:
                return _Verdict(Decision.refused, f"unknown cluster fault {fault!r} (one of {', '.join(CLUSTER_FAULTS)})")
            # Families that touch Secrets, quotas or nodes need the opt-in injector grants: refused before anything
            # changes, rather than failing half-way with a Forbidden (and a rollback with nothing recorded to undo).
            missing = refusal(self.kube, action.target.namespace, str(fault))
            if missing:
                return _Verdict(Decision.refused, missing)
            count = desired  # each one is a rollout, a rescheduling or lost traffic for every replica
        else:
            try:
                env = validate_env((action.patch or {}).get("env") or {})
            except ValueError as exc:
                return _Verdict(Decision.refused, str(exc))
            if not env:
                return _Verdict(Decision.refused, "inject_fault names neither pods nor env")
            count = desired
        if count > self.settings.max_pods_per_action:
            return _Verdict(Decision.refused, f"blast radius: the fault touches {count} pods, more than max_pods_per_action={self.settings.max_pods_per_action}")
        return _Verdict(Decision.allowed, "", pods=count, cooldown_exempt=True)

    # ---------------------------------------------------------------------------- containment kinds
    def _check_flags(self, action: Action, dep: Any) -> _Verdict:
        """Feature flags: only flags the workload declares, only on/off, and the flag store must hold them.
        No pod is restarted (0 pods), but it is a change of behaviour: the cooldown applies."""
        from k8s_runbooks.flags import check_values, declared_flags, get_flag_provider

        try:
            values = check_values((action.patch or {}).get("flags"), declared_flags(dep.metadata.annotations))
            provider = get_flag_provider(self.kube)
        except RunbookError as exc:
            return _Verdict(Decision.refused, str(exc))
        current = provider.read(action.target.namespace, sorted(values))
        missing = sorted(f for f, v in current.items() if v is None)
        if missing:
            return _Verdict(Decision.refused, f"flags {', '.join(missing)} are not in {provider.where(action.target.namespace)}")
        return _Verdict(Decision.allowed, "", pods=0)

    def _check_redirect(self, action: Action, dep: Any) -> _Verdict:
        """Traffic to one ReplicaSet's pods: the Service must select this workload's pods, the ReplicaSet must be
        an older revision of it with ready pods, and the pods cut off from traffic count as the blast radius."""
        patch = action.patch or {}
        svc_name, stable = str(patch.get("service") or ""), str(patch.get("pod_template_hash") or "")
        if not svc_name or not stable:
            return _Verdict(Decision.refused, "redirect_traffic needs patch={'service': S, 'pod_template_hash': H}")
        try:
            svc = workloads.read_service(self.kube, action.target.namespace, svc_name)
        except NotFound:
            return _Verdict(Decision.refused, f"Service {action.target.namespace}/{svc_name} does not exist")
        selector = dict(svc.spec.selector or {})
        labels = dict((dep.spec.template.metadata.labels if dep.spec.template.metadata else None) or {})
        if not selector or any(labels.get(k) != v for k, v in selector.items() if k != workloads.POD_TEMPLATE_HASH):
            return _Verdict(Decision.refused, f"Service {svc_name} does not select the pods of {action.target}")
        if workloads.POD_TEMPLATE_HASH in selector:
            return _Verdict(Decision.refused, f"Service {svc_name} is already narrowed to "
                                              f"{workloads.POD_TEMPLATE_HASH}={selector[workloads.POD_TEMPLATE_HASH]}")
        replicasets = deployment_replicasets(self.kube, dep)
        current, _previous = current_and_previous(dep, replicasets)
        rs = next((r for r in replicasets if (r.metadata.labels or {}).get(workloads.POD_TEMPLATE_HASH) == stable), None)
        if rs is None:
            return _Verdict(Decision.refused, f"no ReplicaSet of {action.target} has {workloads.POD_TEMPLATE_HASH}={stable}")
        if current is not None and rs.metadata.uid == current.metadata.uid:
            return _Verdict(Decision.refused, f"{rs.metadata.name} is the newest revision: nothing older to send traffic to")
        serving = [p for p in deployment_pods(self.kube, dep, replicasets) if _ready(p)]
        keep = [p for p in serving if (p.metadata.labels or {}).get(workloads.POD_TEMPLATE_HASH) == stable]
        if not keep:
            return _Verdict(Decision.refused, f"{rs.metadata.name} has no ready pod: the Service would have no endpoints")
        cut = len(serving) - len(keep)
        if cut > self.settings.max_pods_per_action:
            return _Verdict(Decision.refused, f"blast radius: redirect_traffic takes {cut} pods out of traffic, more than "
                                              f"max_pods_per_action={self.settings.max_pods_per_action}")
        return _Verdict(Decision.allowed, "", pods=cut)

    def _check_restore(self, action: Action) -> _Verdict:
        """Undo of a redirect: restorative (no budget, no cooldown), only where a redirect left its undo."""
        svc_name = str((action.patch or {}).get("service") or "")
        try:
            svc = workloads.read_service(self.kube, action.target.namespace, svc_name)
        except NotFound:
            return _Verdict(Decision.refused, f"Service {action.target.namespace}/{svc_name} does not exist")
        if not (svc.metadata.annotations or {}).get(workloads.SELECTOR_UNDO_ANNOTATION):
            return _Verdict(Decision.refused, f"Service {svc_name} was not redirected ({workloads.SELECTOR_UNDO_ANNOTATION} missing)")
        return _Verdict(Decision.allowed, "", pods=0, cooldown_exempt=True)

    def _budget_and_cooldown(self, action: Action, verdict: _Verdict, flow_run_id: str | None) -> _Verdict:
        """Per-run pod budget and per-target cooldown, read from the cluster (nothing taken yet)."""
        try:
            why = self.state.refusal(action, verdict.pods, verdict.cooldown_exempt, flow_run_id)
        except RunbookError as exc:
            if exc.transient:
                raise
            return _Verdict(Decision.refused, f"guard state in the cluster is unavailable: {exc}")
        return _Verdict(Decision.refused, why) if why else verdict

    def _decide(self, action: Action, approval_mode: ApprovalMode, flow_run_id: str | None) -> _Verdict:
        if action.target.namespace in self.settings.protected_namespaces:
            return _Verdict(Decision.refused, f"namespace {action.target.namespace} is protected")
        verdict = self._blast(action)
        if verdict.decision is Decision.refused:
            return verdict
        verdict = self._budget_and_cooldown(action, verdict, flow_run_id)
        if verdict.decision is Decision.refused:
            return verdict
        if approval_mode == "dry-run":
            return _Verdict(Decision.dry_run, f"dry-run: would {action.describe()} ({verdict.pods} pod(s)); nothing executed", verdict.pods)
        verdict.reason = f"allowed ({approval_mode}): {action.describe()}, {verdict.pods} pod(s) touched"
        return verdict

    def _record(self, action: Action, actor: str, flow_run_id: str | None, verdict: _Verdict, outcome: str | None = None) -> AuditRecord:
        why = f"{verdict.reason}; why: {action.reason}" if action.reason else verdict.reason
        return AuditRecord(actor=actor, flow_run_id=flow_run_id, kube_context=current_context(self.settings), action=action,
                           decision=verdict.decision, reason=why, outcome=outcome)

    def check(self, action: Action, approval_mode: ApprovalMode, actor: str, flow_run_id: str | None) -> AuditRecord:
        """The decision for `action` now, without executing or recording it (used to show a plan)."""
        return self._record(action, actor, flow_run_id, self._decide(action, approval_mode, flow_run_id))

    # -------------------------------------------------------------------------------- execution
    def _reserve(self, action: Action, verdict: _Verdict, flow_run_id: str | None) -> _Verdict:
        """Re-check budget and cooldown and take them atomically (compare-and-swap on the cluster's Leases), so
        two entry points cannot both pass."""
        try:
            claim = self.state.claim(action, verdict.pods, verdict.cooldown_exempt, flow_run_id)
        except RunbookError as exc:
            if exc.transient:
                raise
            return _Verdict(Decision.refused, f"guard state in the cluster is unavailable: {exc}")
        if claim.refused:
            return _Verdict(Decision.refused, claim.refused)
        verdict.claim = claim
        return verdict

    def _release(self, action: Action, verdict: _Verdict, flow_run_id: str | None) -> None:
        """Undo a reservation after a failed execution, so a retry is not refused by our own claim."""
        try:
            self.state.release(action, verdict.claim, flow_run_id)
        except RunbookError as exc:  # the execution error is the one to report; this only delays a retry
            log.warning("could not give back the guard claim on %s: %s", action.target, exc)

    def _run(self, action: Action) -> str:
        ns, name = action.target.namespace, action.target.name
        if action.kind is ActionKind.delete_pods or (action.kind is ActionKind.inject_fault and action.pods):
            grace = action.grace_period_seconds if action.grace_period_seconds is not None else workloads.DEFAULT_GRACE_SECONDS
            return workloads._delete_pods(self.kube, ns, sorted(set(action.pods)), grace)
        if action.kind is ActionKind.rollout_restart:
            return workloads._rollout_restart(self.kube, ns, name)
        if action.kind is ActionKind.scale:
            assert action.replicas is not None  # checked by the guard
            return workloads._scale(self.kube, ns, name, action.replicas)
        if action.kind is ActionKind.rollout_undo:
            return workloads._rollout_undo(self.kube, ns, name)
        if action.kind is ActionKind.set_flags:
            from k8s_runbooks.flags import get_flag_provider

            return get_flag_provider(self.kube).set(ns, dict((action.patch or {})["flags"]))
        if action.kind is ActionKind.redirect_traffic:
            patch = action.patch or {}
            return workloads._redirect_service(self.kube, ns, str(patch["service"]), str(patch["pod_template_hash"]))
        if action.kind is ActionKind.restore_traffic:
            return workloads._restore_service(self.kube, ns, str((action.patch or {})["service"]))
        if action.kind in (ActionKind.inject_fault, ActionKind.remove_fault):
            from k8s_runbooks.drills import cluster_faults
            from k8s_runbooks.drills.kube_faults import _set_env

            patch = action.patch or {}
            if patch.get("fault"):
                return cluster_faults.inject(self.kube, ns, name, str(patch["fault"]))
            outcomes = []
            if patch.get("env") or patch.get("remove_env") or not patch.get("clear_faults"):
                outcomes.append(_set_env(self.kube, ns, name, dict(patch.get("env") or {}),
                                         list(patch.get("remove_env") or [])))
            if patch.get("clear_faults"):
                outcomes.append(cluster_faults.clear(self.kube, ns, name))
            return "; ".join(outcomes)
        assert action.patch is not None  # checked by the guard
        return workloads._patch_resources(self.kube, ns, name, action.patch)

    def execute(self, action: Action, approval_mode: ApprovalMode, actor: str, flow_run_id: str | None) -> ActionResult:
        """Check, then execute when allowed; exactly one audit record either way. Kubernetes errors during
        execution are recorded and re-raised (transient ones are retried by the task policy)."""
        started = utcnow()
        # A transient error reading the target or the guard state propagates unrecorded (nothing was decided);
        # the task policy retries the whole call.
        verdict = self._decide(action, approval_mode, flow_run_id)
        if verdict.decision is Decision.allowed:
            verdict = self._reserve(action, verdict, flow_run_id)
        if verdict.decision is not Decision.allowed:
            append_audit(self.settings, self._record(action, actor, flow_run_id, verdict))
            return ActionResult(action=action, decision=verdict.decision, executed=False, detail=verdict.reason,
                                started_at=started, finished_at=utcnow())
        try:
            outcome = self._run(action)
        except RunbookError as exc:
            self._release(action, verdict, flow_run_id)
            append_audit(self.settings, self._record(action, actor, flow_run_id, verdict, outcome=f"failed: {exc}"))
            raise
        append_audit(self.settings, self._record(action, actor, flow_run_id, verdict, outcome=outcome))
        return ActionResult(action=action, decision=Decision.allowed, executed=True, detail=outcome,
                            started_at=started, finished_at=utcnow())


def _ready(pod: Any) -> bool:
    """A pod that receives traffic: Ready and not terminating."""
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in ((pod.status.conditions if pod.status else None) or []))


# ------------------------------------------------------------------------------------ audit log
def append_audit(settings: Settings, record: AuditRecord) -> None:
    path = Path(settings.state_dir) / AUDIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = record.model_dump_json() + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    for hook in list(_audit_hooks):
        try:
            hook(record)
        except Exception:  # noqa: BLE001 - the file is the durable record; a hook must never fail the action
            log.warning("audit hook %r failed", hook, exc_info=True)


def read_audit(flow_run_id: str | None = None, *, settings: Settings | None = None) -> list[AuditRecord]:
    """Audit records in the order written, optionally of one flow run. Unreadable lines are skipped."""
    path = Path((settings or get_settings()).state_dir) / AUDIT_FILE
    records: list[AuditRecord] = []
    try:
        with open(path, encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            try:
                lines = fh.readlines()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            record = AuditRecord.model_validate_json(line)
        except ValidationError:
            continue
        if flow_run_id is None or record.flow_run_id == flow_run_id:
            records.append(record)
    return records
