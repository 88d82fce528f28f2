"""Typed flow parameters, one model per runbook; the Prefect UI renders each as a form."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from k8s_runbooks.names import DNS_LABEL, DNS_SUBDOMAIN, kube_context_field


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
    kube_context: str | None = kube_context_field()


_APPROVAL_HELP = (
    "required: a person approves destructive actions; auto: pre-approved (drills, alert routes); "
    "dry-run: plan and audit only, change nothing."
)
_DURATION = r"^[1-9][0-9]*(s|m|h)$"


class _ServiceTarget(BaseModel):
    """`deployment` defaults to the service's name (the usual one-Service-per-Deployment layout)."""

    service: str
    deployment: str

    @model_validator(mode="after")
    def _default_deployment(self) -> "_ServiceTarget":
        if not self.deployment:
            self.deployment = self.service
        return self


class HighLatencyParams(_ServiceTarget):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(description="Namespace of the slow service.", pattern=DNS_LABEL, max_length=63)
    service: str = Field(description="Service whose latency is high (value of the service label on its metrics).",
                         pattern=DNS_SUBDOMAIN, max_length=253)
    deployment: str = Field("", description="Deployment behind the service (default: same name as the service).",
                            pattern=r"^$|" + DNS_SUBDOMAIN[1:], max_length=253)
    service_label: str = Field("service", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
                               description="Metric label naming the service (`service` with kube-prometheus, or `app`).")
    approval: Literal["required", "auto", "dry-run"] = Field("required", description=_APPROVAL_HELP)
    approval_timeout_seconds: int = Field(600, ge=1, le=86_400, description="How long to wait for an approval before escalating.")
    p95_threshold_ms: float = Field(300, gt=0, le=600_000, description="p95 latency above this is an incident (the seed's 300 ms).")
    rate_window: str = Field("5m", pattern=_DURATION, description="rate() window of the latency, error and CPU queries.")
    throttling_threshold: float = Field(0.25, gt=0, le=1, description="A pod throttled in more than this share of CFS periods is CPU-starved.")
    outlier_factor: float = Field(2.0, ge=1, le=100, description="A pod is an outlier when its p95 exceeds this many times the median pod's.")
    cpu_limit_factor: float = Field(2.0, gt=1, le=10, description="A proposed CPU limit is the current one times this factor.")
    log_tail_lines: int = Field(200, ge=1, le=5_000, description="Log lines to read per outlier pod.")
    stable_seconds: int = Field(20, ge=1, le=3_600, description="Ready and no new restarts for this long counts as rolled out.")
    recovery_timeout_seconds: int = Field(180, ge=10, le=3_600, description="Give up waiting for the rollout after this long.")
    monitor_stable_seconds: int = Field(60, ge=0, le=3_600, description="p95 below the threshold for this long counts as recovered.")
    monitor_timeout_seconds: int = Field(600, ge=0, le=7_200, description="Escalate when p95 has not recovered after this long.")
    incident_window_minutes: int = Field(30, ge=1, le=1_440, description="A ReplicaSet created this recently can be the bad rollout.")
    chart_lookback_minutes: int = Field(15, ge=1, le=1_440, description="Charts start this long before detection.")
    allow_all_replicas: bool = Field(False, description="Allow an action to touch every replica at once.")
    drill: bool = Field(False, description="This incident was injected on purpose (marks the post-mortem as a drill).")
    notes: str = Field("", max_length=2_000, description="Free text for the record (alert link, ticket, ...).")
    kube_context: str | None = kube_context_field()


class IncidentParams(_ServiceTarget):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(description="Namespace of the affected workload.", pattern=DNS_LABEL, max_length=63)
    service: str = Field(description="Affected service (and Deployment, unless `deployment` is set).", pattern=DNS_SUBDOMAIN, max_length=253)
    deployment: str = Field("", description="Deployment behind the service (default: the service name).",
                            pattern=r"^$|" + DNS_SUBDOMAIN[1:], max_length=253)
    kind: Literal["auto", "pod-crash", "high-latency", "diagnose"] = Field(
        "auto", description="Which runbook to run; auto: from the alert, else from the diagnosis of the workload; "
        "diagnose: diagnose and escalate with the exact change, never act.")
    alertname: str = Field("", max_length=200, description="Alert that opened the incident (PodCrashLooping, HighLatency, ...).")
    alert_labels: dict[str, str] = Field(default_factory=dict, description="Labels of the firing alert (Alertmanager payload).")
    approval: Literal["required", "auto", "dry-run"] = Field("required", description=_APPROVAL_HELP)
    approval_timeout_seconds: int = Field(600, ge=1, le=86_400, description="How long the runbook waits for an approval.")
    p95_threshold_ms: float = Field(300, gt=0, le=600_000, description="p95 above this classifies the incident as high latency.")
    service_label: str = Field("service", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description="Metric label naming the service.")
    rate_window: str = Field("5m", pattern=_DURATION, description="rate() window for classification and charts.")
    crash_window: str = Field("5m", pattern=_DURATION, description="A restart within this window counts as crash-looping.")
    chart_lookback_minutes: int = Field(15, ge=1, le=1_440, description="Charts start this long before detection.")
    runbook_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Extra parameters for the dispatched runbook (e.g. stable_seconds), validated by it.")
    drill: bool = Field(False, description="This incident was injected on purpose.")
    notes: str = Field("", max_length=2_000, description="Free text for the record (alert link, ticket, ...).")
    kube_context: str | None = kube_context_field()
