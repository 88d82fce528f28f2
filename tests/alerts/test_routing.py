"""Routing: matchers, parameters from labels, ignore with reason, hostile label values, config errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from k8s_runbooks.alerts.payloads import Alert, AlertmanagerPayload
from k8s_runbooks.alerts.routing import Router, load_routes, parse_routes
from k8s_runbooks.errors import ConfigError
from tests.alerts.conftest import REPO, payload_bytes


def _alerts() -> list[Alert]:
    return AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()


def test_pod_crash_routes_to_its_deployment_with_parameters_from_labels(router: Router) -> None:
    decision = router.decide(_alerts()[0])
    assert decision.outcome == "dispatch" and decision.deployment == "pod-crash/pod-crash"
    params = decision.parameters["params"]
    assert (params["namespace"], params["deployment"], params["approval"]) == ("shop", "checkout", "required")
    assert "fingerprint 4c9b2a1f0e8d7c6b" in params["notes"]


def test_high_latency_takes_the_service_label(router: Router) -> None:
    decision = router.decide(_alerts()[1])
    assert decision.deployment == "high-latency/high-latency"
    assert decision.parameters["params"]["service"] == "payments"


def test_unrouted_alert_is_ignored_with_the_reason(router: Router) -> None:
    decision = router.decide(_alerts()[2])
    assert decision.outcome == "ignored" and "Watchdog" in decision.reason


@pytest.mark.parametrize("label, value", [
    ("namespace", 'shop",pod=~".+'),           # label selector / PromQL injection
    ("namespace", "Shop"),                      # upper case is not a namespace
    ("deployment", "checkout}) or vector(1"),   # PromQL
    ("deployment", "a" * 300),                  # too long
    ("deployment", "../../etc"),
    ("namespace", "shop\nfoo"),
])
def test_hostile_label_values_are_rejected_not_dispatched(router: Router, label: str, value: str) -> None:
    alert = _alerts()[0]
    alert = dataclasses.replace(alert, labels={**alert.labels, label: value})
    decision = router.decide(alert)
    assert decision.outcome == "rejected" and decision.parameters is None
    assert label in decision.reason


def test_missing_label_is_rejected_with_the_parameter_named(router: Router) -> None:
    alert = _alerts()[0]
    alert = dataclasses.replace(alert, labels={k: v for k, v in alert.labels.items() if k != "deployment"})
    decision = router.decide(alert)
    assert decision.outcome == "rejected" and "params.deployment" in decision.reason


def test_regex_match_and_source_filter() -> None:
    router = parse_routes("""
routes:
  - name: crit
    sources: [grafana]
    match_re: {severity: "crit.*", namespace: "shop|pay"}
    deployment: f/d
    parameters: {ns: "{labels.namespace}"}
""")
    base = _alerts()[0]
    assert router.decide(dataclasses.replace(base, source="grafana")).outcome == "dispatch"
    assert router.decide(base).outcome == "ignored"  # alertmanager is not a source of this route
    other = dataclasses.replace(base, source="grafana", labels={**base.labels, "namespace": "shopx"})
    assert router.decide(other).outcome == "ignored"  # regexes are anchored


def test_sandbox_routes_are_auto_for_the_demo_namespace_only() -> None:
    router = load_routes(REPO / "deployments" / "alert-routes.sandbox.yaml")
    base = _alerts()[0]
    assert router.decide(base).parameters["params"]["approval"] == "auto"
    assert router.decide(dataclasses.replace(base, labels={**base.labels, "namespace": "prod"})).outcome == "ignored"


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("""version: 1
routes:
  - name: ok
    match: {alertname: A}
    deployment: a/b
  - name: bad
    match_re: {alertname: "(unclosed"}
    deployment: no-slash
    approval: sometimes
""")
    with pytest.raises(ConfigError) as exc:
        load_routes(path)
    text = str(exc.value)
    assert f"{path}:7: routes.1.match_re" in text and "invalid regular expression" in text
    assert f"{path}:8: routes.1.deployment" in text
    assert f"{path}:9: routes.1.approval" in text


def test_unknown_placeholder_and_missing_matcher_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"routes\.0\.parameters.*unknown placeholder \{annotations\.summary\}"):
        parse_routes("routes:\n  - {name: a, match: {x: y}, deployment: a/b, parameters: {n: '{annotations.summary}'}}\n")
    with pytest.raises(ConfigError, match="has no matcher"):
        parse_routes("routes:\n  - {name: a, deployment: a/b}\n")


def test_missing_routes_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the alert routes file"):
        load_routes(tmp_path / "nope.yaml")
