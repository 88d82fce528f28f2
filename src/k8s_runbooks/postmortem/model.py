"""The post-mortem model and the machine-readable run record a runbook flow publishes.

A flow publishes its `RunRecord` as a markdown artifact whose body embeds the JSON in a fenced block
(key `<flow>-record`), updated after every step, so a post-mortem can be rebuilt from Prefect alone for
any past run, including runs that failed half-way.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k8s_runbooks.diagnosis.hypothesis import Hypothesis, PlanStep
from k8s_runbooks.models import ActionResult, AuditRecord, Finding, TimelineEntry, utcnow

RECORD_FENCE = "json k8s-runbooks-record"
_RECORD_RE = re.compile(r"```json k8s-runbooks-record\n(?P<json>.*?)\n```", re.S)

Outcome = Literal["in-progress", "resolved", "mitigated", "escalated", "rejected", "dry-run", "failed", "cancelled"]


class EvidenceItem(BaseModel):
    title: str
    kind: Literal["log", "events", "query", "pods", "sentry", "text"] = "text"
    content: str = Field(description="already redacted plain text; rendered inside a code block")
    step: str = ""


class ChartRef(BaseModel):
    """A PNG chart of the incident; the post-mortem embeds it (absolute path, made relative on render)."""

    title: str
    path: str
    table_key: str = ""


class IncidentAlert(BaseModel):
    """An alert that opened or joined the incident: a row of the run's `incident-alerts` table (written by the alert
    receiver's dispatcher, labels already redacted)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["opened", "joined"] = "opened"
    alertname: str = ""
    source: str = ""
    status: str = ""
    starts_at: str = ""
    received_at: str = ""
    joined_at: str = ""
    resolved_at: str = ""
    fingerprint: str = ""
    labels: str = ""


class RunRecord(BaseModel):
    """What a runbook flow knows about its own run; the post-mortem's raw material."""

    flow: str
    runbook_title: str = ""
    namespace: str = ""
    deployment: str = ""
    approval_mode: str = "required"
    drill: bool = False
    started_at: datetime = Field(default_factory=utcnow)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    actions: list[ActionResult] = Field(default_factory=list)
    audit: list[AuditRecord] = Field(default_factory=list)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    charts: list[ChartRef] = Field(default_factory=list)
    outcome: Outcome = "in-progress"
    outcome_detail: str = ""
    impact: str = ""
    hypotheses: list[Hypothesis] = Field(default_factory=list, description="the diagnosis, ranked: the root-cause section")
    plan: list[PlanStep] = Field(default_factory=list, description="what answers each hypothesis: action or escalation")
    snapshot_key: str = Field("", description="artifact holding the evidence snapshot the diagnosis was made from")

    def note(self, event: str, detail: str = "", kind: str = "step", at: datetime | None = None) -> TimelineEntry:
        entry = TimelineEntry(at=at or utcnow(), event=event, detail=detail, kind=kind)  # type: ignore[arg-type]
        self.timeline.append(entry)
        return entry

    def to_markdown(self) -> str:
        # Backticks only occur inside JSON strings, where \u0060 is an equivalent escape; this keeps
        # evidence text from closing the fence early.
        payload = self.model_dump_json(indent=1).replace("`", "\\u0060")
        return (
            f"# Run record: {self.flow}\n\nMachine-readable record of this run (timeline, findings, actions, "
            f"audit, evidence). The post-mortem is rebuilt from it.\n\n```{RECORD_FENCE}\n{payload}\n```\n"
        )

    @classmethod
    def from_markdown(cls, text: str) -> "RunRecord | None":
        m = _RECORD_RE.search(text or "")
        if m is None:
            return None
        return cls.model_validate(json.loads(m.group("json")))


class PostMortem(BaseModel):
    title: str
    flow_run_id: str
    flow_run_name: str = ""
    flow_run_url: str | None = None
    final_state: str = ""
    date: datetime
    duration: timedelta
    impact: str
    summary: str
    timeline: list[TimelineEntry] = Field(default_factory=list)
    root_cause: list[str] = Field(default_factory=list)
    ranked_causes: list[Hypothesis] = Field(default_factory=list, description="the diagnosis, each cause with its facts")
    plan: list[PlanStep] = Field(default_factory=list)
    snapshot_key: str = ""
    actions_taken: list[str] = Field(default_factory=list)
    lessons_learned: list[str] = Field(default_factory=list)
    action_items: list[str] = Field(default_factory=list)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    charts: list[ChartRef] = Field(default_factory=list)
    drill: bool = False
    alerts: list[IncidentAlert] = Field(default_factory=list, description="every alert that opened or joined the incident")

    @property
    def duration_text(self) -> str:
        seconds = int(self.duration.total_seconds())
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        if hours:
            return f"{hours} h {minutes} min {secs} s"
        if minutes:
            return f"{minutes} min {secs} s"
        return f"{secs} s"
