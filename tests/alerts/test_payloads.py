"""Payload parsing of the three documented webhook formats into the normalised Alert."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from k8s_runbooks.alerts.payloads import (
    AlertmanagerPayload, GrafanaPayload, SentryIssueAlertPayload, labels_fingerprint,
)
from tests.alerts.conftest import payload, payload_bytes


def test_alertmanager_v4_firing_normalises_every_alert() -> None:
    alerts = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()
    assert [a.alertname for a in alerts] == ["PodCrashLooping", "HighLatency", "Watchdog"]
    crash = alerts[0]
    assert (crash.source, crash.status, crash.fingerprint) == ("alertmanager", "firing", "4c9b2a1f0e8d7c6b")
    assert crash.labels["deployment"] == "checkout" and crash.ends_at is None  # Go zero time = not ended
    # startsAt with an offset is normalised to UTC, so the dedup key does not depend on the sender's zone.
    assert alerts[1].starts_at == "2026-11-25T10:15:04.500000Z"


def test_alertmanager_resolved_keeps_fingerprint_and_starts_at() -> None:
    firing = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_firing")).normalise()[0]
    resolved = AlertmanagerPayload.model_validate_json(payload_bytes("alertmanager_resolved")).normalise()[0]
    assert resolved.status == "resolved" and resolved.ends_at == "2026-11-25T10:21:33.500000Z"
    assert resolved.dedup_key == firing.dedup_key


def test_alertmanager_without_fingerprint_gets_a_stable_label_fingerprint() -> None:
    data = payload("alertmanager_firing")
    del data["alerts"][0]["fingerprint"]
    alert = AlertmanagerPayload.model_validate(data).normalise()[0]
    assert alert.fingerprint == labels_fingerprint(dict(reversed(list(data["alerts"][0]["labels"].items()))))


def test_alertmanager_wrong_version_is_rejected() -> None:
    data = payload("alertmanager_firing")
    data["version"] = "3"
    with pytest.raises(ValidationError):
        AlertmanagerPayload.model_validate(data)


def test_grafana_unified_alerting_payload() -> None:
    (alert,) = GrafanaPayload.model_validate_json(payload_bytes("grafana_firing")).normalise()
    assert (alert.source, alert.alertname, alert.fingerprint) == ("grafana", "HighLatency", "c6eadffa33fcdf37")
    assert alert.starts_at == "2026-11-25T09:20:00Z"
    assert alert.url == "https://grafana.example.com/d/shop-latency"


def test_sentry_issue_alert_tags_become_labels() -> None:
    (alert,) = SentryIssueAlertPayload.model_validate_json(payload_bytes("sentry_event_alert")).normalise()
    assert alert.source == "sentry" and alert.status == "firing"
    assert alert.fingerprint == "sentry-issue-1117540176"
    assert alert.labels["alertname"] == "Checkout crash"
    assert (alert.labels["namespace"], alert.labels["deployment"]) == ("shop", "checkout")
    assert alert.annotations["summary"].startswith("RuntimeError")
