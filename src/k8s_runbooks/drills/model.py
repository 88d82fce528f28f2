"""The drill experiment: what to break, how steady looks, how fast each phase must be, and its scorecard.

Like a Chaos Toolkit experiment (steady-state hypothesis → method → rollbacks), plus what those lack:
the real incident response runs against the fault, each response phase is timed against a target, and
rollback is unconditional and verified.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from k8s_runbooks.models import utcnow
from k8s_runbooks.names import DNS_LABEL, DNS_SUBDOMAIN, kube_context_field
from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS, FAULTS

DRILLS_LABEL = "k8s-runbooks.io/drills"
DRILLS_ALLOWED = "allowed"

Scenario = Literal["pod-crash", "latency", "family"]
# family drills: the cluster fault families (drills.cluster_faults), one per kind
FaultKind = Literal["crash", "latency", "cpu", "oom", "errors", "pod-kill", "custom", "missing-secret", "image-not-found",
                    "node-selector", "taint", "quota", "liveness-port", "readiness-port", "service-selector", "zero-replicas"]
# env-var faults of the shop image (any image honouring the same variables works); a drill's crash comes sooner
ENV_FAULTS: dict[str, tuple[str, str]] = {**FAULTS, "crash": (FAULTS["crash"][0], "1")}
FAULT_MESSAGE_VAR = "FAULT_MESSAGE"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultSpec(_M):
    kind: FaultKind = Field("crash", description="crash/latency/cpu/oom/errors: env-var fault (a rollout); pod-kill: delete pods; custom: your task; "
                            "missing-secret ... zero-replicas: a cluster fault family (a person's mistake in the cluster's objects).")
    value: str | None = Field(None, max_length=32, description="Fault strength (seconds before crash, ms of latency, 0..1 CPU, MB/s leak, 0..1 errors).")
    message: str = Field("", max_length=300, description="FAULT_MESSAGE: the crash log line.")
    pods: int = Field(1, ge=1, le=50, description="pod-kill: how many pods to delete (never all unless allow_all_replicas).")
    allow_all_replicas: bool = Field(False, description="pod-kill may delete every replica at once.")
    task: str = Field("", pattern=r"^$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="custom: 'module:function(namespace, deployment, value)' that injects.")
    rollback_task: str = Field("", pattern=r"^$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="custom: 'module:function(namespace, deployment)' that removes it.")

    def env(self) -> dict[str, str]:
        """Env vars an env fault sets ({} for pod-kill/custom)."""
        if self.kind not in ENV_FAULTS:
            return {}
        var, default = ENV_FAULTS[self.kind]
        out = {var: self.value if self.value is not None else default}
        if self.message:
            out[FAULT_MESSAGE_VAR] = self.message
        return out

    def describe(self) -> str:
        if self.kind == "pod-kill":
            return f"delete {self.pods} pod(s)"
        if self.kind == "custom":
            return f"custom fault {self.task}"
        if self.kind in CLUSTER_FAULTS:
            return f"{self.kind}: {CLUSTER_FAULTS[self.kind]}"
        return ", ".join(f"{k}={v}" for k, v in self.env().items())


def validate_env(env: dict[str, Any]) -> dict[str, str]:
    """Env var names/values an inject_fault action may set (names like FAULT_X, short string values)."""
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or not isinstance(value, str) or len(value) > 300:
            raise ValueError(f"invalid fault env {name!r}={value!r}")
        out[name] = value
    return out


class SteadyState(_M):
    """The hypothesis: each probe with its tolerance."""

    min_ready_ratio: float = Field(1.0, gt=0, le=1, description="ready replicas >= this share of desired (1.0: all).")
    p95_threshold_ms: float | None = Field(300, gt=0, description="p95 latency must stay below this (None: no latency probe).")
    p95_window: str = Field("30s", pattern=r"^[1-9][0-9]*(s|m|h)$", description="rate() window of the p95 probe.")
    p95_no_data_ok: bool = Field(False, description="Accept 'no latency data' (a service without traffic).")
    service: str = Field("", pattern=r"^$|" + DNS_SUBDOMAIN[1:], description="Service label of the metrics (default: the deployment).")
    service_label: str = Field("service", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    max_firing_alerts: int = Field(0, ge=0, description="Firing Alertmanager alerts for the target tolerated.")
    check_alerts: bool = Field(True, description="Ask Alertmanager for firing alerts of the target.")


class Targets(_M):
    """Seconds each phase may take; the scorecard says met / missed."""

    detect_seconds: float = Field(60, gt=0, description="fault → alert firing.")
    respond_seconds: float = Field(60, gt=0, description="alert firing → runbook running.")
    approval_seconds: float = Field(300, gt=0, description="time the runbook waited for a human approval.")
    diagnose_seconds: float = Field(60, gt=0, description="family drills: alert firing → ranked causes published (the right cause first).")
    escalate_seconds: float = Field(300, gt=0, description="family drills a person fixes: fault → the runbook escalated with the exact change.")
    recover_seconds: float = Field(300, gt=0, description="fault → steady state again.")


class DrillParams(_M):
    namespace: str = Field(description="Namespace of the target (must be labelled k8s-runbooks.io/drills=allowed).", pattern=DNS_LABEL, max_length=63)
    deployment: str = Field(description="Deployment to break.", pattern=DNS_SUBDOMAIN, max_length=253)
    kube_context: str | None = kube_context_field()
    fault: FaultSpec | None = Field(None, description="What to break (default per scenario: crash / latency).")
    response: Literal["auto", "alert", "direct", "none"] = Field(
        "auto", description="alert: the real alert path (Alertmanager → receiver → runbook deployment); direct: the runbook as a "
        "subflow; auto: alert when the receiver and deployments exist, else direct (always direct with a kube_context: "
        "the alert path runs on the clusters the receiver's routes name); none: only measure recovery.")
    approval: Literal["auto", "required"] = Field("auto", description="Approval mode of the runbook (required: measure the on-call).")
    approval_timeout_seconds: int = Field(600, ge=1, le=86_400)
    dry_run: bool = Field(False, description="Check guardrails and steady state, show the plan, inject nothing.")
    steady_state: SteadyState = Field(default_factory=SteadyState)
    targets: Targets = Field(default_factory=Targets)
    detect_timeout_seconds: int = Field(120, ge=1, le=3_600, description="Give up waiting for the alert after this long.")
    response_timeout_seconds: int = Field(900, ge=1, le=7_200, description="Give up waiting for the runbook after this long.")
    runbook_wait_after_recovery_seconds: int = Field(300, ge=0, le=7_200, description="Alert path: how long to wait for the runbook to finish once the target is steady again.")
    recover_timeout_seconds: int = Field(300, ge=1, le=7_200, description="Give up waiting for steady state after this long.")
    post_verify_timeout_seconds: int = Field(120, ge=0, le=3_600, description="After rollback, wait this long for replicas, latency and no fault (alerts are reported, not waited for).")
    runbook_overrides: dict[str, Any] = Field(default_factory=dict, description="Extra parameters of the direct runbook (e.g. stable_seconds).")
    notes: str = Field("", max_length=2_000)


class ProbeResult(_M):
    name: str
    ok: bool
    observed: str
    tolerance: str


class SteadyStateReport(_M):
    ok: bool
    at: datetime = Field(default_factory=utcnow)
    probes: list[ProbeResult] = Field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(f"{p.name}: {'ok' if p.ok else 'NOT OK'} ({p.observed}, tolerance {p.tolerance})" for p in self.probes)

    def failing(self) -> list[ProbeResult]:
        return [p for p in self.probes if not p.ok]


class Phase(_M):
    name: Literal["detect", "respond", "approval", "diagnose", "recover", "escalate"]
    seconds: float | None = None
    target_seconds: float | None = None
    met: bool | None = None  # None: not measured
    detail: str = ""


Outcome = Literal["passed", "failed", "aborted", "refused", "cancelled", "dry-run"]
SCORECARD_FENCE = "json k8s-runbooks-drill-scorecard"
_SCORECARD_RE = re.compile(r"```json k8s-runbooks-drill-scorecard\n(?P<json>.*?)\n```", re.S)


class Scorecard(_M):
    drill_run_id: str = ""
    flow: str = ""
    scenario: str = ""
    namespace: str
    deployment: str
    fault: str = ""
    response_path: str = ""
    approval: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    injected_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: Outcome = "failed"
    outcome_detail: str = ""
    phases: list[Phase] = Field(default_factory=list)
    steady_before: SteadyStateReport | None = None
    steady_after: SteadyStateReport | None = None
    rollback: list[str] = Field(default_factory=list, description="what the rollback did")
    rollback_ok: bool | None = None
    responders: list[str] = Field(default_factory=list, description="what the responders (runbook, approvers) did")
    runbook_run_id: str | None = None
    runbook_state: str | None = None

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def seconds(self, name: str) -> float | None:
        p = self.phase(name)
        return p.seconds if p else None

    @property
    def success(self) -> bool:
        return self.outcome == "passed"

    @classmethod
    def from_markdown(cls, text: str) -> "Scorecard | None":
        m = _SCORECARD_RE.search(text or "")
        if m is None:
            return None
        return cls.model_validate(json.loads(m.group("json")))
