"""`looks_rolled_out`: the wake-up condition of `wait_until_healthy`'s watch (what `kubectl rollout status` checks)."""

from __future__ import annotations

from typing import Any

import pytest

from k8s_runbooks.kube.workloads import looks_rolled_out


def _dep(status: dict[str, Any], replicas: int | None = 3, generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {} if replicas is None else {"replicas": replicas},
            "status": status}


DONE = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}


@pytest.mark.parametrize("status, expected", [
    (DONE, True),
    ({**DONE, "observedGeneration": 1}, False),  # the controller has not seen the new template yet
    ({**DONE, "updatedReplicas": 2}, False),  # one replica still runs the old template
    ({**DONE, "replicas": 4}, False),  # an old replica is left (surge)
    ({**DONE, "readyReplicas": 2}, False),  # a new replica is not ready
    ({}, False),
])
def test_rollout_status(status: dict[str, Any], expected: bool) -> None:
    assert looks_rolled_out(_dep(status)) is expected


def test_expected_replicas_override_the_spec() -> None:
    scaled_to_zero = _dep({"observedGeneration": 3}, replicas=0, generation=3)  # zero counts are omitted
    assert looks_rolled_out(scaled_to_zero)
    assert not looks_rolled_out(scaled_to_zero, expected_replicas=2)


def test_replicas_default_to_one() -> None:
    one = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    assert looks_rolled_out(_dep(one, replicas=None))
    assert not looks_rolled_out(_dep({**one, "replicas": 2}, replicas=None))
