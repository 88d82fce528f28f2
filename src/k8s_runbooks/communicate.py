"""Communication templates: one Jinja2 file per audience (responders, stakeholders, status page) with the
incident response plan's content (what happened, impact, actions taken, next steps), rendered for Slack
(mrkdwn, escaped), the generic webhook (Slack-compatible text) and email (plain text).

Templates live in `k8s_runbooks/templates/`; a file of the same name in `K8S_RUNBOOKS_TEMPLATES_DIR` replaces
the packaged one, so wording can change without touching code. Each template has a `subject` and a `body`
block. They run in Jinja's sandbox with undefined variables as errors: a broken template fails with its name
and line, and the caller keeps the packaged rendering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, Field

from k8s_runbooks.errors import ConfigError
from k8s_runbooks.models import utcnow

UpdateKind = Literal["opened", "mitigated", "resolved", "escalated"]
Audience = Literal["responders", "stakeholders", "status_page"]
Format = Literal["slack", "webhook", "email"]
AUDIENCES: tuple[Audience, ...] = ("responders", "stakeholders", "status_page")
log = logging.getLogger(__name__)
PACKAGED = Path(__file__).resolve().parent / "templates"

_HEADLINES: dict[str, str] = {
    "opened": ":rotating_light: Incident opened",
    "mitigated": ":large_yellow_circle: Incident mitigated",
    "resolved": ":white_check_mark: Incident resolved",
    "escalated": ":sos: Incident escalated — a human is needed",
}
_PLAIN_HEADLINES = {"opened": "Incident opened", "mitigated": "Incident mitigated", "resolved": "Incident resolved",
                    "escalated": "Incident escalated — a human is needed"}
_PUBLIC = {"opened": "Investigating", "mitigated": "Monitoring", "resolved": "Resolved", "escalated": "Investigating"}

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
    findings: list[str] = Field(default_factory=list, description="evidence lines (responders only)")
    next_steps: str = ""
    run_url: str | None = None
    drill: bool = False
    runbook: str = Field("", description="the runbook handling the incident, e.g. high-latency")
    incident: str = Field("", description="incident reference (flow run name, alert, ticket)")
    at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


def _slack_escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if isinstance(value, list):
        return [_slack_escape(v) for v in value]
    return value


def _bold(fmt: Format) -> Any:
    return (lambda text: str(text)) if fmt == "email" else (lambda text: f"*{text}*")


def _link(fmt: Format) -> Any:
    if fmt == "slack":
        return lambda url, label: f"<{url}|{label}>"
    if fmt == "email":
        return lambda url, label: f"{label}: {url}"
    return lambda url, label: str(url)


def _context(update: StatusUpdate, fmt: Format) -> dict[str, Any]:
    """Template variables: the update's fields (`kind`, `target`, `summary`, `impact`, `actions`, `findings`,
    `next_steps`, `run_url`, `drill`, `runbook`, `incident`, `at`), `headline`, `kind_word`, `public_status`,
    `service_name`, `fmt`, and the helpers `b(text)` (bold) and `link(url, label)` for the format."""
    data = update.model_dump()
    data["next_steps"] = update.next_steps or _DEFAULT_NEXT[update.kind]
    data["at"] = f"{update.at:%Y-%m-%d %H:%M:%S}"
    if fmt == "slack":
        data = {k: _slack_escape(v) for k, v in data.items()}
    data.update(
        fmt=fmt,
        headline=_HEADLINES[update.kind] if fmt != "email" else _PLAIN_HEADLINES[update.kind],
        kind_word=update.kind.upper(),
        public_status=_PUBLIC[update.kind],
        # Customers see the service, not namespace/deployment.
        service_name=update.target.rsplit("/", 1)[-1],
        b=_bold(fmt),
        link=_link(fmt),
    )
    return data


def _environment(templates_dir: Path | None) -> SandboxedEnvironment:
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGED)))
    return SandboxedEnvironment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                                autoescape=False, keep_trailing_newline=True, trim_blocks=False)


def render(audience: Audience, fmt: Format, update: StatusUpdate, templates_dir: Path | None = None) -> Rendered:
    """`audience`'s template for `fmt`; ConfigError (naming the file and line) when a template is broken."""
    env = _environment(templates_dir)
    name = f"{audience}.j2"
    try:
        template = env.get_template(name)
        ctx = template.new_context(_context(update, fmt))
        subject = "".join(template.blocks["subject"](ctx)).strip() if "subject" in template.blocks else ""
        body = "".join(template.blocks["body"](ctx)) if "body" in template.blocks else template.render(_context(update, fmt))
    except jinja2.TemplateError as exc:
        where = f"{getattr(exc, 'filename', None) or name}:{getattr(exc, 'lineno', '?')}"
        raise ConfigError(f"communication template {where} failed: {exc}",
                          hint="fix the template in K8S_RUNBOOKS_TEMPLATES_DIR or remove it to use the packaged one") from None
    return Rendered(subject=" ".join(subject.split())[:200], text=body.strip("\n") + "\n")


def render_safely(audience: Audience, fmt: Format, update: StatusUpdate, templates_dir: Path | None) -> Rendered:
    """`render`, falling back to the packaged template (and logging why) when the user's template is broken:
    an incident update must go out even with a typo in a template."""
    try:
        return render(audience, fmt, update, templates_dir)
    except ConfigError as exc:
        if templates_dir is None:
            raise
        log.error("%s; the packaged %s template is used instead", exc, audience)
        return render(audience, fmt, update, None)


def render_status_update(update: StatusUpdate, templates_dir: Path | None = None) -> str:
    """The stakeholders' update as the generic (Slack-compatible) webhook gets it (K8S_RUNBOOKS_TEMPLATES_DIR
    unless `templates_dir` is given)."""
    from k8s_runbooks.chatops.settings import get_chatops_settings

    return render_safely("stakeholders", "webhook", update, templates_dir or get_chatops_settings().templates_dir).text
