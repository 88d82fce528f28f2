"""Settings of Slack, PagerDuty, email and the communication templates (`K8S_RUNBOOKS_<FIELD>`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChatOpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="K8S_RUNBOOKS_", extra="ignore")

    # --- Slack -------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="Slack bot token (xoxb-...) for chat.postMessage, chat.update, chat.postEphemeral and "
                    "usergroups.users.list; unset: no Slack messages (approvals only in the Prefect UI).",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="Slack app signing secret: the receiver verifies X-Slack-Signature with it (unset: "
                    "/v1/slack/interactions answers 401 to everything); also keys the approval attestation.",
    )
    slack_api_url: str = Field(default="https://slack.com/api", description="Base URL of the Slack Web API.")
    slack_channel: str | None = Field(
        default=None, description="Channel id for approval requests when the matching approval policy names none."
    )
    slack_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one Slack or PagerDuty call, seconds (a slow Slack never blocks a run)."
    )
    chatops_config: Path = Field(
        default=Path("deployments/chatops.yaml"),
        description="Approval policies: approvers, two-person rule and escalation chain per route or namespace.",
    )

    # --- PagerDuty ---------------------------------------------------------------------------
    pagerduty_events_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue", description="PagerDuty Events API v2 endpoint."
    )
    pagerduty_routing_key: SecretStr | None = Field(
        default=None, description="Integration (routing) key of the primary on-call service (escalation level `page: primary`)."
    )
    pagerduty_secondary_routing_key: SecretStr | None = Field(
        default=None, description="Integration (routing) key of the secondary on-call service (`page: secondary`)."
    )

    # --- Email -------------------------------------------------------------------------------
    smtp_host: str | None = Field(default=None, description="SMTP server for email updates (unset: no email).")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port (587 submission with STARTTLS, 25 plain).")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS before logging in.")
    smtp_username: str | None = Field(default=None, description="SMTP login user (unset: no login).")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    email_from: str = Field(default="k8s-runbooks@localhost", description="From address of email updates.")
    email_recipients: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Email recipients per audience, JSON: {"stakeholders": ["a@example.com"], "status_page": [...]}.',
    )

    # --- Templates ---------------------------------------------------------------------------
    templates_dir: Path | None = Field(
        default=None,
        description="Directory of your own communication templates (responders.j2, stakeholders.j2, status_page.j2); "
                    "files there replace the packaged ones.",
    )


@lru_cache(maxsize=1)
def get_chatops_settings() -> ChatOpsSettings:
    return ChatOpsSettings()
