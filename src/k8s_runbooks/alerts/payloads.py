"""Webhook payload models (Alertmanager v4, Grafana unified alerting, Sentry issue alerts) and one normalised form.

The models accept unknown fields (senders add fields over versions) but type-check what we use. Every format is
reduced to `Alert`: source, status, fingerprint, startsAt (UTC, ISO 8601), labels and annotations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

Source = Literal["alertmanager", "grafana", "sentry"]
SOURCES: tuple[Source, ...] = ("alertmanager", "grafana", "sentry")
Status = Literal["firing", "resolved"]

# Bounds against abusive payloads (the body size limit bounds the total; these bound each piece).
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
LabelValue = Annotated[str, StringConstraints(max_length=4096)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=128)]
Annotations = Annotated[dict[LabelName, Annotated[str, StringConstraints(max_length=65_536)]], Field(max_length=128)]


@dataclass(slots=True)
class Alert:
    source: Source
    status: Status
    fingerprint: str
    starts_at: str  # normalised UTC ISO 8601; part of the dedup key
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    ends_at: str | None = None
    url: str | None = None

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def dedup_key(self) -> str:
        return f"{self.source}|{self.fingerprint}|{self.starts_at}"


def labels_fingerprint(labels: dict[str, str]) -> str:
    """Stable fingerprint of a label set, for senders that omit `fingerprint` (Alertmanager < 0.22)."""
    blob = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _in_utc(value: datetime) -> datetime:
    """Every timestamp must have a UTC equivalent (0001-01-01T00:00:00+05:00 has none): a 422, not a 500 later."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("timestamp out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]


def utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _ends_at(value: datetime | None) -> str | None:
    # Alertmanager and Grafana send Go's zero time for "not ended".
    if value is None or value.year <= 1:
        return None
    return utc_iso(value)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class AlertmanagerAlert(_Payload):
    status: Status
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    starts_at: UtcDatetime = Field(alias="startsAt")
    ends_at: UtcDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL", max_length=8192)
    fingerprint: str | None = Field(default=None, max_length=128)


class AlertmanagerPayload(_Payload):
    """Alertmanager webhook, format version 4 (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", max_length=65_536)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Status
    receiver: str = Field(max_length=1024)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=8192)
    alerts: list[AlertmanagerAlert] = Field(max_length=10_000)

    def normalise(self, source: Source = "alertmanager") -> list[Alert]:
        return [
            Alert(
                source=source, status=a.status, fingerprint=a.fingerprint or labels_fingerprint(a.labels),
                starts_at=utc_iso(a.starts_at), labels=a.labels, annotations=a.annotations,
                ends_at=_ends_at(a.ends_at), url=a.generator_url,
            )
            for a in self.alerts
        ]


class GrafanaAlert(AlertmanagerAlert):
    silence_url: str | None = Field(default=None, alias="silenceURL", max_length=8192)
    dashboard_url: str | None = Field(default=None, alias="dashboardURL", max_length=8192)
    panel_url: str | None = Field(default=None, alias="panelURL", max_length=8192)
    values: dict[str, Any] | None = None
    value_string: str | None = Field(default=None, alias="valueString", max_length=65_536)


class GrafanaPayload(_Payload):
    """Grafana unified-alerting webhook contact point (Alertmanager-like, plus orgId, title, message, URLs)."""

    receiver: str = Field(default="", max_length=1024)
    status: Status
    org_id: int | None = Field(default=None, alias="orgId")
    alerts: list[GrafanaAlert] = Field(max_length=10_000)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=8192)
    version: str = Field(default="1", max_length=16)
    group_key: str = Field(default="", alias="groupKey", max_length=65_536)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    title: str = Field(default="", max_length=65_536)
    state: str = Field(default="", max_length=64)
    message: str = Field(default="", max_length=1_000_000)

    def normalise(self) -> list[Alert]:
        return [
            Alert(
                source="grafana", status=a.status, fingerprint=a.fingerprint or labels_fingerprint(a.labels),
                starts_at=utc_iso(a.starts_at), labels=a.labels, annotations=a.annotations,
                ends_at=_ends_at(a.ends_at), url=a.dashboard_url or a.generator_url,
            )
            for a in self.alerts
        ]


class SentryEvent(_Payload):
    event_id: str = Field(max_length=64)
    issue_id: int | Annotated[str, StringConstraints(min_length=1, max_length=64)]
    title: str = Field(default="", max_length=8192)
    level: str = Field(default="error", max_length=32)
    datetime_: UtcDatetime = Field(alias="datetime")
    project: int | str | None = None
    environment: str | None = Field(default=None, max_length=256)
    tags: list[tuple[str, str | None]] = Field(default_factory=list, max_length=512)
    web_url: str | None = Field(default=None, max_length=8192)
    issue_url: str | None = Field(default=None, max_length=8192)


class SentryData(_Payload):
    event: SentryEvent
    triggered_rule: str = Field(max_length=1024)


class SentryIssueAlertPayload(_Payload):
    """Sentry integration-platform issue alert (`Sentry-Hook-Resource: event_alert`)."""

    action: Literal["triggered"]
    data: SentryData

    def normalise(self) -> list[Alert]:
        event = self.data.event
        labels = {k: v for k, v in event.tags if v is not None and 0 < len(k) <= 256 and len(v) <= 4096}
        labels.update({
            "alertname": self.data.triggered_rule,
            "sentry_issue_id": str(event.issue_id),
            "level": event.level,
        })
        if event.project is not None:
            labels["sentry_project"] = str(event.project)
        if event.environment:
            labels["environment"] = event.environment
        # One run per issue per triggering event: Sentry's own retries repeat the same event.
        return [Alert(
            source="sentry", status="firing", fingerprint=f"sentry-issue-{event.issue_id}",
            starts_at=utc_iso(event.datetime_), labels=labels, annotations={"summary": event.title},
            url=event.web_url or event.issue_url,
        )]
