"""The opt-in drill injector identity (deployments/k8s/drills/rbac-drill-injector.yaml), offline: its rules are exactly
what the guard checks before a `missing-secret`, `quota` or `taint` fault (fault_rbac.NEEDS), bound to the runbooks'
ServiceAccount only, each rule with its reason, valid against the Kubernetes schemas, and kept out of every
kustomization (opt-in). tests/drills/test_family_drill_rbac.py shows on the sandbox that the injectors need no more
and no less."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from k8s_runbooks import rbac
from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS
from k8s_runbooks.drills.fault_rbac import INJECTOR_CLUSTER_ROLE, INJECTOR_MANIFEST, INJECTOR_ROLE, NEEDS
from tests.conftest import REPO

MANIFEST = REPO / INJECTOR_MANIFEST
BASE = REPO / "deployments" / "k8s" / "base" / "rbac.yaml"


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_the_manifest_grants_exactly_what_the_guard_checks_for_the_three_families() -> None:
    granted = rbac.shipped(MANIFEST.read_text(), "k8s-runbooks")
    needed = rbac.Rules({(g.group, g.resource, g.verb) for gs in NEEDS.values() for g in gs if g.namespaced},
                        {(g.group, g.resource, g.verb) for gs in NEEDS.values() for g in gs if not g.namespaced})
    assert rbac.compare(needed, granted) == {"missing": {"namespaced": [], "cluster": []},
                                             "extra": {"namespaced": [], "cluster": []}}
    assert set(NEEDS) == {"missing-secret", "quota", "taint"} and set(NEEDS) <= set(CLUSTER_FAULTS)


def test_the_runbooks_role_does_not_hold_what_the_injector_adds() -> None:
    base, injector = rbac.shipped(BASE.read_text(), "k8s-runbooks"), rbac.shipped(MANIFEST.read_text(), "k8s-runbooks")
    assert not base.namespaced & injector.namespaced and not base.cluster & injector.cluster
    assert rbac.problems(base) == []  # the Secret grants stay out of the runbooks' identity
    assert rbac.problems(injector) == ["namespaced: forbidden resource secrets (create)",
                                       "namespaced: forbidden resource secrets (delete)",
                                       "namespaced: forbidden resource secrets (get)"]


def test_bound_to_the_runbooks_service_account_only() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs())
    assert kinds == [("ClusterRole", INJECTOR_CLUSTER_ROLE), ("ClusterRoleBinding", INJECTOR_CLUSTER_ROLE),
                     ("Role", INJECTOR_ROLE), ("RoleBinding", INJECTOR_ROLE)]
    for d in docs():
        if d["kind"].endswith("Binding"):
            assert d["subjects"] == [{"kind": "ServiceAccount", "name": "k8s-runbooks", "namespace": "k8s-runbooks"}]
            assert d["roleRef"]["name"] == d["metadata"]["name"]


def test_each_rule_says_why() -> None:
    lines = MANIFEST.read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert len(rules) == 3
    for i in rules:
        assert lines[i - 1].strip().startswith("#"), f"rule at line {i + 1} has no reason above it"


@pytest.mark.parametrize("version", ["1.37.0", "1.31.0"])
def test_valid_against_the_kubernetes_schemas(version: str) -> None:
    for d in docs():
        kubernetes_validate.validate(d, version, strict=True)


def test_opt_in_no_kustomization_includes_it() -> None:
    for k in (REPO / "deployments").rglob("kustomization.yaml"):
        text = k.read_text()
        assert "drills" not in text and "drill-injector" not in text, k


def test_access_reviews_are_not_derived_as_grants() -> None:
    """The guard's SelfSubjectAccessReviews are allowed to every authenticated identity: never a Role rule."""
    derived = rbac.derive([
        {"verb": "create", "resource": "selfsubjectaccessreviews", "subresource": "", "namespace": "",
         "group": "authorization.k8s.io", "count": 3},
        {"verb": "patch", "resource": "nodes", "subresource": "", "namespace": "", "group": "", "count": 1}])
    assert derived.cluster == {("", "nodes", "patch")} and derived.namespaced == set()
