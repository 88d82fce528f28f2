"""Status-update templates (Markdown) for stakeholders: incident opened / mitigated / resolved / escalated.

Pre-defined templates keep updates consistent, as the incident response plan asks. The text is plain
Markdown that reads well in Slack-compatible webhooks and in a Prefect markdown artifact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from k8s_runbooks.models import utcnow

UpdateKind = Literal["opened", "mitigated", "resolved", "escalated"]

_HEADLINES: dict[str, str] = {
    "opened": ":rotating_light: Incident opened",
    "mitigated": ":large_yellow_circle: Incident mitigated",
    "resolved": ":white_check_mark: Incident resolved",
    "escalated": ":sos: Incident escalated — a human is needed",
}

_DEFAULT_NEXT: dict[str, str] = {
    "opened": "The runbook is collecting evidence; the next update follows when an action is taken.",
    "mitigated": "Impact is contained; root-cause work continues and the post-mortem follows.",
    "resolved": "The workload is healthy and the alert has cleared; the post-mortem is attached to the run.",
    "escalated": "The on-call engineer must take over: review the evidence in the run and act by hand.",
}


class StatusUpdate(BaseModel):
    kind: UpdateKind
    target: str = Field(description="namespace/deployment")
    summary: str
    impact: str = ""
    actions: list[str] = Field(default_factory=list)
    next_steps: str = ""
    run_url: str | None = None
    drill: bool = False
    runbook: str = Field("", description="the runbook handling the incident, e.g. high-latency")
    incident: str = Field("", description="incident reference (flow run name, alert, ticket)")
    at: datetime = Field(default_factory=utcnow)


def render_status_update(update: StatusUpdate) -> str:
    drill = " [DRILL]" if update.drill else ""
    lines = [f"*{_HEADLINES[update.kind]}{drill}: {update.target}*", ""]
    lines.append(f"*When*: {update.at:%Y-%m-%d %H:%M:%S} UTC")
    if update.incident:
        lines.append(f"*Incident*: {update.incident}")
    lines.append(f"*What*: {update.summary}")
    if update.runbook:
        lines.append(f"*Runbook*: {update.runbook}")
    if update.impact:
        lines.append(f"*Impact*: {update.impact}")
    if update.actions:
        lines.append("*Actions taken*:")
        lines.extend(f"- {a}" for a in update.actions)
    else:
        lines.append("*Actions taken*: none")
    lines.append(f"*Next steps*: {update.next_steps or _DEFAULT_NEXT[update.kind]}")
    if update.run_url:
        lines.append(f"*Run*: {update.run_url}")
    return "\n".join(lines) + "\n"
