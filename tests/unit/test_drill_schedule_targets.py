"""What `k8s-runbooks drill schedule` stores as a schedule's parameters. Prefect merges a schedule's parameters
into the deployment's one key deep, so the schedule's `params` is the whole drill: a family drill's must keep its
fault kind, or the scheduled run would be a crash drill."""

from __future__ import annotations

import pytest

from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.model import DrillParams
from k8s_runbooks.drills.schedules import SCENARIOS, target_parameters
from k8s_runbooks.errors import InvalidInput
from k8s_runbooks_prefect.deploy import SPECS


def test_every_drill_deployment_can_be_scheduled_by_its_scenario() -> None:
    drills = {f"{s.flow_name}/{s.name}" for s in SPECS if s.drill}
    assert set(SCENARIOS.values()) == drills


@pytest.mark.parametrize("kind", list(CLUSTER_FAULTS))
def test_a_family_schedule_keeps_its_fault_kind(kind: str) -> None:
    params = target_parameters("shop", "payments", True, kind)["params"]
    assert params == {"namespace": "shop", "deployment": "payments", "dry_run": True, "fault": {"kind": kind}}
    assert DrillParams.model_validate(params).fault.kind == kind


def test_the_env_fault_drills_keep_their_defaults() -> None:
    assert target_parameters("shop", "payments", False) == {
        "params": {"namespace": "shop", "deployment": "payments", "dry_run": False}}


def test_a_bad_target_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="invalid drill target"):
        target_parameters("Shop_!", "payments", False, "quota")
