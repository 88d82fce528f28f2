"""Containment: limit an incident's impact while its cause is fixed (the seed's "stop the bleeding" options).

The fix table (`diagnosis.plan`) answers a cause with the action that removes it; containment options only stop
the damage, so they are offered *after* the fix as alternatives a person chooses, never as the lead action an
`auto` approval would take:
- `redirect_traffic`: the Service selector narrowed to the pods of an older ReplicaSet that still has ready
  pods (the stable revision), when a newer revision is serving; undone by `restore_traffic`.
- `set_flags`: the workload's declared feature flags that are on, turned off (see `k8s_runbooks.flags`);
  undone by setting them back.
- `scale` to 0: every pod stopped. Offered only when the run allows it (`allow_all_replicas`: an explicit
  choice of whoever started the run); undone by `scale_back_gradually`, one step at a time, each step validated
  (ready, restarts flat, the alert condition clear) before the next.

`read_facts` reads what the options depend on (through the one client seam); `options`, `arrange`, `undo_of`
and `scale_back_steps` are pure, so the placement of every option is unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import Field

from k8s_runbooks.errors import RunbookError
from k8s_runbooks.flags import declared_flags, get_flag_provider
from k8s_runbooks.guard import Guard
from k8s_runbooks.kube.client import Kube, Op
from k8s_runbooks.kube.pods import current_and_previous, deployment_pods, deployment_replicasets, read_deployment
from k8s_runbooks.kube.workloads import POD_TEMPLATE_HASH
from k8s_runbooks.models import Action, ActionKind, ActionResult, ApprovalMode, Decision, Model, WorkloadRef

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Facts:
    """What the containment options of one workload depend on, as read from the cluster."""

    target: WorkloadRef
    replicas: int
    flags: dict[str, str | None] = field(default_factory=dict)  # declared flag -> current value (None: not in the store)
    flag_store: str = ""
    services: list[str] = field(default_factory=list)  # Services selecting the workload's pods (not narrowed yet)
    stable_hash: str | None = None  # pod-template-hash of the newest older ReplicaSet with ready pods
    stable_replicaset: str | None = None
    stable_ready: int = 0
    newer_ready: list[str] = field(default_factory=list)  # ready pods of newer revisions: what a redirect cuts off
    notes: list[str] = field(default_factory=list)  # why an option could not be judged (a read failed)


def _ready(pod: object) -> bool:
    status = getattr(pod, "status", None)
    if getattr(pod.metadata, "deletion_timestamp", None) is not None:  # type: ignore[attr-defined]
        return False
    return any(c.type == "Ready" and c.status == "True" for c in ((status.conditions if status else None) or []))


def read_facts(kube: Kube, target: WorkloadRef) -> Facts:
    """The workload's replicas, declared flags and their values, the Services in front of it and the stable
    revision a redirect could send traffic to. A failed flag read is a note, not an error."""
    ns = target.namespace
    dep = read_deployment(kube, ns, target.name)
    replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
    notes: list[str] = []
    flags: dict[str, str | None] = {}
    store = ""
    declared = declared_flags(dep.metadata.annotations)
    if declared:
        try:
            provider = get_flag_provider(kube)
            store = provider.where(ns)
            flags = provider.read(ns, declared)
        except RunbookError as exc:
            notes.append(f"feature flags {', '.join(declared)} could not be read: {exc}")
    labels = dict((dep.spec.template.metadata.labels if dep.spec.template.metadata else None) or {})
    svcs = kube.call(Op("list", "services", ns), kube.core.list_namespaced_service, ns).items
    services = sorted(s.metadata.name for s in svcs
                      if (sel := dict(s.spec.selector or {})) and POD_TEMPLATE_HASH not in sel
                      and all(labels.get(k) == v for k, v in sel.items()))
    replicasets = deployment_replicasets(kube, dep)
    current, _previous = current_and_previous(dep, replicasets)
    pods = [p for p in deployment_pods(kube, dep, replicasets) if _ready(p)]
    stable_hash = stable_rs = None
    stable_ready = 0
    newer: list[str] = []
    if current is not None:
        cur_rev = int((current.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "0") or 0)
        older = sorted((r for r in replicasets if r.metadata.uid != current.metadata.uid
                        and int((r.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "0") or 0) < cur_rev),
                       key=lambda r: int((r.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "0") or 0),
                       reverse=True)
        for rs in older:
            h = (rs.metadata.labels or {}).get(POD_TEMPLATE_HASH)
            ready = [p for p in pods if (p.metadata.labels or {}).get(POD_TEMPLATE_HASH) == h]
            if h and ready:
                stable_hash, stable_rs, stable_ready = h, rs.metadata.name, len(ready)
                break
        if stable_hash:
            newer = sorted(p.metadata.name for p in pods if (p.metadata.labels or {}).get(POD_TEMPLATE_HASH) != stable_hash)
    return Facts(target=target, replicas=replicas, flags=flags, flag_store=store, services=services,
                 stable_hash=stable_hash, stable_replicaset=stable_rs, stable_ready=stable_ready, newer_ready=newer,
                 notes=notes)


def options(facts: Facts, allow_all_replicas: bool) -> list[Action]:
    """The containment options that apply, least disruptive first: redirect traffic (only when an older revision
    still has ready pods and a newer one serves), turn the declared flags that are on off (only when the
    workload declares flags), scale to zero (only with `allow_all_replicas`)."""
    out: list[Action] = []
    t = facts.target
    if facts.stable_hash and facts.newer_ready and facts.services:
        svc = facts.services[0]
        out.append(Action(kind=ActionKind.redirect_traffic, target=t, pods=list(facts.newer_ready),
                          patch={"service": svc, "pod_template_hash": facts.stable_hash},
                          reason=f"contain: send {svc}'s traffic only to the {facts.stable_ready} ready pod(s) of the stable "
                                 f"revision {facts.stable_replicaset} while the cause is fixed; undo: restore the selector"))
    on = sorted(f for f, v in facts.flags.items() if v == "on")
    if on:
        out.append(Action(kind=ActionKind.set_flags, target=t, patch={"flags": {f: "off" for f in on}},
                          reason=f"contain: turn off the feature flag{'s' if len(on) > 1 else ''} the workload declares "
                                 f"({facts.flag_store}) so the code behind {'them' if len(on) > 1 else 'it'} stops running; "
                                 "undo: turn back on"))
    if allow_all_replicas and facts.replicas > 0:
        out.append(Action(kind=ActionKind.scale, target=t, replicas=0, allow_all_replicas=True,
                          reason=f"contain: stop the bleeding, scale all {facts.replicas} replicas to 0 while the cause is "
                                 f"fixed; then back to {facts.replicas} gradually, each step validated"))
    return out


def is_containment(action: Action) -> bool:
    """An action that limits impact rather than removing the cause."""
    if action.kind is ActionKind.scale:
        return action.replicas == 0
    if action.kind is ActionKind.set_flags:
        return "off" in ((action.patch or {}).get("flags") or {}).values()
    return action.kind is ActionKind.redirect_traffic


def arrange(fixes: list[Action], containment: list[Action]) -> list[Action]:
    """The approval's options: the fixes first (the first is what `auto` takes), then the containment options,
    never two of one kind (an approval answers with the kind). A containment option never leads."""
    out = list(fixes)
    for a in containment:
        if all(x.kind is not a.kind for x in out):
            out.append(a)
    return out


def undo_of(action: Action, facts: Facts) -> Action | None:
    """What puts a containment action back once the cause is fixed (None for anything else). Scaling back is
    the target of `scale_back_gradually`, not one step."""
    t = facts.target
    if action.kind is ActionKind.scale and action.replicas == 0 and facts.replicas > 0:
        return Action(kind=ActionKind.scale, target=t, replicas=facts.replicas,
                      reason=f"undo containment: back to {facts.replicas} replicas gradually, each step validated")
    if action.kind is ActionKind.redirect_traffic:
        svc = (action.patch or {}).get("service")
        return Action(kind=ActionKind.restore_traffic, target=t, patch={"service": svc},
                      reason=f"undo containment: Service {svc} selects every pod of {t.name} again")
    if action.kind is ActionKind.set_flags:
        flags = (action.patch or {}).get("flags") or {}
        back = {f: facts.flags[f] for f in flags if facts.flags.get(f) in ("on", "off") and facts.flags[f] != flags[f]}
        if back:
            return Action(kind=ActionKind.set_flags, target=t, patch={"flags": back},
                          reason="undo containment: the flags as they were before")
    return None


def scale_back_steps(current: int, to: int, step: int = 1) -> list[int]:
    """The replica counts a gradual scale-back goes through: `current`+step, ... up to `to`."""
    step = max(1, step)
    out, n = [], current
    while n < to:
        n = min(n + step, to)
        out.append(n)
    return out


class ScaleBack(Model):
    """What a gradual scale-back did: the guard's result per step, where it stopped and why."""

    results: list[ActionResult] = Field(default_factory=list)
    reached: int = 0
    target: int = 0
    validations: list[str] = Field(default_factory=list, description="one line per validated step")
    stopped: str = Field("", description="why it stopped before the target ('' when it got there)")

    @property
    def complete(self) -> bool:
        return self.reached >= self.target and not self.stopped


def scale_back_gradually(guard: Guard, target: WorkloadRef, current: int, to: int, validate: Callable[[int], tuple[bool, str]],
                         *, step: int, approval_mode: ApprovalMode, actor: str, flow_run_id: str | None,
                         on_progress: Progress | None = None) -> ScaleBack:
    """Scale up `step` replicas at a time through the guard; after each step `validate(replicas)` must pass
    (ready, restarts flat, the alert condition clear) before the next. Stops at the first refusal or failed
    validation, leaving the workload at the last validated size (a person decides what next)."""
    report = ScaleBack(reached=current, target=to)
    for n in scale_back_steps(current, to, step):
        action = Action(kind=ActionKind.scale, target=target, replicas=n,
                        reason=f"gradual scale-back to {to} replicas ({n}/{to}), each step validated")
        result = guard.execute(action, approval_mode, actor, flow_run_id)
        report.results.append(result)
        if result.decision is Decision.dry_run:
            report.stopped = f"dry-run: would scale back {current} -> {to} in steps {scale_back_steps(current, to, step)}"
            return report
        if not result.executed:
            report.stopped = f"the guard refused scaling to {n}: {result.detail}"
            return report
        ok, detail = validate(n)
        report.validations.append(f"{n}/{to}: {detail}")
        if on_progress:
            on_progress(f"scale-back {n}/{to}: {detail}")
        if not ok:
            report.stopped = f"step {n}/{to} did not validate: {detail}"
            return report
        report.reached = n
    return report


def undo_command(action: Action, facts: Facts) -> str:
    """How a person undoes a containment action later (the escalation states it): the guarded way first."""
    t = facts.target
    if action.kind is ActionKind.scale and action.replicas == 0:
        return (f"scale back gradually once the cause is fixed: kubectl scale deployment/{t.name} -n {t.namespace} "
                f"--replicas=<n> for n = 1..{facts.replicas}, waiting for ready pods between steps")
    if action.kind is ActionKind.redirect_traffic:
        svc = (action.patch or {}).get("service")
        return (f"restore the selector kept in the k8s-runbooks.io/selector-undo annotation of Service {svc}: "
                f"kubectl get service {svc} -n {t.namespace} -o jsonpath='{{.metadata.annotations.k8s-runbooks\\.io/selector-undo}}'")
    if action.kind is ActionKind.set_flags:
        flags = (action.patch or {}).get("flags") or {}
        back = ", ".join(f"{f}={facts.flags.get(f) or 'on'}" for f in sorted(flags))
        return f"set {back} again in {facts.flag_store or 'the flag store'} once the cause is fixed"
    return ""
