"""Drill schedules on the Prefect server: turned on where the user wants drills, off elsewhere.

`prefect.yaml` (and `k8s_runbooks_prefect.deploy.SPECS`, which a test keeps equal to it) is the one definition of the
drill deployments; their cron schedules are registered paused, because a drill breaks a workload on purpose.
`k8s-runbooks drill schedule pod-crash --on -n shop -d payments` turns the schedule on where you choose, with the
drill's target as the schedule's parameters; the Prefect scheduler then creates the runs and the workers run
them. Over Prefect's REST API (`submit.PrefectRest`: timeouts, retries), no Prefect import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.model import DrillParams, FaultSpec
from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.submit import PrefectRest

SCENARIOS = {"pod-crash": "drill-pod-crash/drill-pod-crash", "latency": "drill-latency/drill-latency",
             # the fault-family drills: one deployment of flow drill-fault-family per family
             **{kind: f"drill-fault-family/drill-{kind}" for kind in CLUSTER_FAULTS}}


@dataclass
class ScheduleView:
    id: str
    cron: str
    timezone: str
    active: bool
    parameters: dict[str, Any]

    @classmethod
    def of(cls, data: dict[str, Any]) -> "ScheduleView":
        sched = data.get("schedule") or {}
        return cls(str(data["id"]), str(sched.get("cron") or sched.get("interval") or sched.get("rrule") or "?"),
                   str(sched.get("timezone") or "UTC"), bool(data.get("active")), dict(data.get("parameters") or {}))


def target_parameters(namespace: str, deployment: str, dry_run: bool, scenario: str = "pod-crash") -> dict[str, Any]:
    """The schedule's parameters: the drill's target, validated like the run form.

    A schedule's `params` replaces the deployment's whole (Prefect merges parameters one key deep), so a family
    drill's schedule carries its fault kind too; without it the run would default to a crash."""
    family = scenario in CLUSTER_FAULTS
    try:
        params = DrillParams(namespace=namespace, deployment=deployment, dry_run=dry_run,
                             fault=FaultSpec(kind=scenario) if family else None)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(f"invalid drill target: {exc}".splitlines()[0]) from None
    target = params.model_dump(mode="json", include={"namespace", "deployment", "dry_run"})
    return {"params": {**target, "fault": {"kind": scenario}} if family else target}


def set_schedule(rest: PrefectRest, scenario: str, *, active: bool | None = None, cron: str | None = None,
                 timezone: str = "UTC", parameters: dict[str, Any] | None = None) -> list[ScheduleView]:
    """Change the drill deployment's schedule (one: the one prefect.yaml defines; made if it has none)."""
    if scenario not in SCENARIOS:
        raise InvalidInput(f"unknown drill {scenario!r}", hint=f"one of {', '.join(SCENARIOS)}")
    name = SCENARIOS[scenario]
    dep_id = rest.deployment_id(name)
    schedules = rest.request("GET", f"/deployments/{dep_id}/schedules", f"schedules of {name}") or []
    update: dict[str, Any] = {}
    if active is not None:
        update["active"] = active
    if cron is not None:
        update["schedule"] = {"cron": cron, "timezone": timezone}
    if parameters is not None:
        update["parameters"] = parameters
    if not schedules:
        if cron is None:
            raise InvalidInput(f"{name} has no schedule yet", hint="give it one with --cron '0 3 * * 1'")
        rest.request("POST", f"/deployments/{dep_id}/schedules", f"add a schedule to {name}",
                     json=[{"active": bool(active), "schedule": update["schedule"], "parameters": parameters or {}}])
    else:
        for sched in schedules:
            if update:
                rest.request("PATCH", f"/deployments/{dep_id}/schedules/{sched['id']}", f"update the schedule of {name}",
                             json=update)
    return [ScheduleView.of(s) for s in rest.request("GET", f"/deployments/{dep_id}/schedules", f"schedules of {name}") or []]
