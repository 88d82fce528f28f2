"""Containment options without a cluster: which apply, where they sit in the approval (after the fix, never
first), what undoes each, the steps of a gradual scale-back, the flag provider seam and the guard's checks that
need no cluster (protected namespaces, unknown provider)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.diagnosis import Identified, actions_for
from k8s_runbooks import containment
from k8s_runbooks.chatops.policy import pods_touched
from k8s_runbooks.diagnosis.evidence import Evidence, ObjectRef
from k8s_runbooks.diagnosis.hypothesis import Cause, Diagnosis, Hypothesis
from k8s_runbooks.diagnosis.plan import plan
from k8s_runbooks.errors import ConfigError, InvalidInput
from k8s_runbooks.flags import FlagProvider, check_values, declared_flags, get_flag_provider
from k8s_runbooks.flags.settings import FlagSettings
from k8s_runbooks.guard import Guard, read_audit
from k8s_runbooks.models import Action, ActionKind, Decision, WorkloadRef
from k8s_runbooks.settings import Settings

T = WorkloadRef(namespace="shop", name="checkout")


def _facts(**kw: object) -> containment.Facts:
    base: dict[str, object] = dict(target=T, replicas=3, flags={"new-checkout-flow": "on", "dark-mode": "off"},
                                   flag_store="ConfigMap shop/feature-flags", services=["checkout"], stable_hash="abc",
                                   stable_replicaset="checkout-abc", stable_ready=2, newer_ready=["checkout-def-1"])
    base.update(kw)
    return containment.Facts(**base)  # type: ignore[arg-type]


def _found(cause: Cause, **details: str) -> Identified:
    h = Hypothesis(cause=cause, object=ObjectRef(kind="Deployment", name="checkout", namespace="shop"), confidence=0.9,
                   summary=cause.value, details=details)
    return Identified(Evidence(namespace="shop"), Diagnosis(namespace="shop", hypotheses=[h]), plan([h]))


def test_each_option_applies_only_where_it_can_help() -> None:
    kinds = [a.kind for a in containment.options(_facts(), allow_all_replicas=True)]
    assert kinds == [ActionKind.redirect_traffic, ActionKind.set_flags, ActionKind.scale]  # least disruptive first
    assert [a.kind for a in containment.options(_facts(stable_hash=None, newer_ready=[]), False)] == [ActionKind.set_flags]
    assert [a.kind for a in containment.options(_facts(services=[]), False)] == [ActionKind.set_flags]  # nothing to narrow
    assert containment.options(_facts(flags={"dark-mode": "off"}, stable_hash=None), False) == []  # no flag is on
    assert containment.options(_facts(flags={}, stable_hash=None), True)[0].replicas == 0  # scale to 0 only when allowed
    assert containment.options(_facts(flags={}, stable_hash=None, replicas=0), True) == []  # already at zero
    flags = next(a for a in containment.options(_facts(), False) if a.kind is ActionKind.set_flags)
    assert flags.patch == {"flags": {"new-checkout-flow": "off"}}  # only the flags that are on
    redirect = containment.options(_facts(), False)[0]
    assert redirect.patch == {"service": "checkout", "pod_template_hash": "abc"} and redirect.pods == ["checkout-def-1"]


def test_the_fix_leads_and_containment_follows_never_first() -> None:
    found = _found(Cause.crash_after_rollout, introduced_by_revision="2", previous_revision="1")
    fixes = actions_for(found, T, allow_all_replicas=True)
    arranged = containment.arrange(fixes, containment.options(_facts(), allow_all_replicas=True))
    assert [a.kind for a in arranged] == [ActionKind.rollout_undo, ActionKind.redirect_traffic, ActionKind.set_flags,
                                          ActionKind.scale]
    assert not containment.is_containment(arranged[0]) and all(containment.is_containment(a) for a in arranged[1:])
    # A fix of the same kind keeps its place: scaling back from zero is the fix, so no scale-to-zero option.
    back = Action(kind=ActionKind.scale, target=T, replicas=3)
    assert [a.kind for a in containment.arrange([back], containment.options(_facts(flags={}, stable_hash=None), True))] == [
        ActionKind.scale]
    assert containment.arrange([back], containment.options(_facts(flags={}, stable_hash=None), True))[0].replicas == 3


def test_a_cause_no_action_fixes_leaves_only_containment() -> None:
    found = _found(Cause.secret_missing, secret="checkout-db-credentials", key="DB_PASSWORD")
    assert actions_for(found, T, allow_all_replicas=True) == []
    assert found.steps[0].escalation is not None and "checkout-db-credentials" in found.steps[0].escalation.change
    assert [a.kind for a in containment.arrange([], containment.options(_facts(), False))] == [
        ActionKind.redirect_traffic, ActionKind.set_flags]


def test_what_undoes_each_containment() -> None:
    facts = _facts()
    zero, redirect, flags = (containment.options(facts, True)[i] for i in (2, 0, 1))
    assert containment.undo_of(zero, facts) == Action(kind=ActionKind.scale, target=T, replicas=3,
                                                      reason=containment.undo_of(zero, facts).reason)  # type: ignore[union-attr]
    assert containment.undo_of(redirect, facts).patch == {"service": "checkout"}  # type: ignore[union-attr]
    assert containment.undo_of(flags, facts).patch == {"flags": {"new-checkout-flow": "on"}}  # type: ignore[union-attr]
    assert containment.undo_of(Action(kind=ActionKind.rollout_undo, target=T), facts) is None
    assert "--replicas=<n> for n = 1..3" in containment.undo_command(zero, facts)
    assert "selector-undo" in containment.undo_command(redirect, facts)
    assert containment.undo_command(flags, facts) == "set new-checkout-flow=on again in ConfigMap shop/feature-flags once the cause is fixed"


@pytest.mark.parametrize(("current", "to", "step", "steps"), [(0, 3, 1, [1, 2, 3]), (0, 5, 2, [2, 4, 5]), (2, 3, 1, [3]),
                                                              (3, 3, 1, []), (0, 2, 0, [1, 2])])
def test_scale_back_steps(current: int, to: int, step: int, steps: list[int]) -> None:
    assert containment.scale_back_steps(current, to, step) == steps


def test_flag_values_are_limited_to_declared_flags() -> None:
    assert declared_flags({"k8s-runbooks.io/feature-flags": " a, b ,a,, "}) == ["a", "b"]
    assert declared_flags(None) == []
    assert check_values({"a": "off"}, ["a", "b"]) == {"a": "off"}
    for bad in ({"c": "off"}, {"a": "disabled"}, {}, None):
        with pytest.raises(InvalidInput):
            check_values(bad, ["a", "b"])


class _HttpFlags:
    """What a plugged-in provider looks like (an HTTP flag service would call its API in read/set)."""

    def __init__(self, kube: object) -> None:
        self.values: dict[str, str] = {"new-checkout-flow": "on"}

    def where(self, namespace: str) -> str:
        return f"flag service ({namespace})"

    def read(self, namespace: str, flags: list[str]) -> dict[str, str | None]:
        return {f: self.values.get(f) for f in flags}

    def set(self, namespace: str, values: dict[str, str]) -> str:
        self.values.update(values)
        return f"set {values}"


def make_http_flags(kube: object) -> _HttpFlags:
    return _HttpFlags(kube)


def test_the_settings_pick_the_flag_provider() -> None:
    provider = get_flag_provider(None, FlagSettings(flag_provider=f"{__name__}:make_http_flags"))
    assert isinstance(provider, FlagProvider) and provider.where("shop") == "flag service (shop)"
    assert type(get_flag_provider(None, FlagSettings())).__name__ == "ConfigMapFlags"
    with pytest.raises(ConfigError, match="cannot load it"):
        get_flag_provider(None, FlagSettings(flag_provider="no_such_module:factory"))
    with pytest.raises(ValueError):
        FlagSettings(flag_provider="http://flags.example")  # a provider is code, not a URL


def test_blast_radius_the_approval_policy_counts() -> None:
    assert pods_touched("set_flags", [], None, 3) == 0
    assert pods_touched("restore_traffic", [], None, 3) == 0
    assert pods_touched("redirect_traffic", ["a", "b"], None, 3) == 2
    assert pods_touched("scale", [], 0, 3) == 3


@pytest.mark.parametrize("action", [
    Action(kind=ActionKind.set_flags, target=WorkloadRef(namespace="kube-system", name="dns"), patch={"flags": {"x": "off"}}),
    Action(kind=ActionKind.redirect_traffic, target=WorkloadRef(namespace="kube-system", name="dns"),
           patch={"service": "dns", "pod_template_hash": "abc"}),
    Action(kind=ActionKind.restore_traffic, target=WorkloadRef(namespace="kube-system", name="dns"), patch={"service": "dns"}),
])
def test_containment_in_a_protected_namespace_is_refused_and_audited(tmp_path: Path, action: Action) -> None:
    settings = Settings(kubeconfig=tmp_path / "missing-kubeconfig", state_dir=tmp_path / "state")
    result = Guard(settings).execute(action, "auto", "alice", "run-p")
    assert result.decision is Decision.refused and not result.executed
    [record] = read_audit("run-p", settings=settings)
    assert "protected" in record.reason and record.action.kind is action.kind
    assert action.describe()
