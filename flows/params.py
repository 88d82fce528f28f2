"""Typed flow parameters, one model per runbook; the Prefect UI renders each as a form."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# RFC 1123 label (namespaces) and subdomain (deployment names), as the API server validates them.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class PodCrashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(description="Namespace of the crashing workload.", pattern=DNS_LABEL, max_length=63)
    deployment: str = Field(description="Deployment whose pods crash.", pattern=DNS_SUBDOMAIN, max_length=253)
    approval: Literal["required", "auto", "dry-run"] = Field(
        "required",
        description="required: a person approves destructive actions; auto: pre-approved (drills, alert routes); "
        "dry-run: plan and audit only, change nothing.",
    )
    approval_timeout_seconds: int = Field(600, ge=1, le=86_400, description="How long to wait for an approval before escalating.")
    log_tail_lines: int = Field(200, ge=1, le=5_000, description="Lines of the previous container's log to collect per pod.")
    stable_seconds: int = Field(20, ge=1, le=3_600, description="Ready and no new restarts for this long counts as recovered.")
    recovery_timeout_seconds: int = Field(180, ge=10, le=3_600, description="Give up waiting for recovery after this long.")
    verify_window_seconds: int = Field(
        120, ge=30, le=3_600, description="The crash condition looks back this far: a restart within it still counts as crashing."
    )
    verify_timeout_seconds: int = Field(240, ge=0, le=3_600, description="How long to wait for the crash alert condition to clear.")
    incident_window_minutes: int = Field(30, ge=1, le=1_440, description="How far back to look for Sentry issues and events.")
    allow_all_replicas: bool = Field(False, description="Allow an action to touch every replica at once (e.g. scale a canary to 0).")
    drill: bool = Field(False, description="This incident was injected on purpose (marks the post-mortem as a drill).")
    notes: str = Field("", max_length=2_000, description="Free text for the record (alert link, ticket, ...).")
