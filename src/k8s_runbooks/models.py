"""Data that tasks return and flows publish. Prefect-free pydantic v2 models shared by every layer."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------ targets
class WorkloadRef(Model):
    namespace: str
    kind: Literal["Deployment"] = "Deployment"
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind.lower()}/{self.name}"


# ------------------------------------------------------------------------------------ evidence
class ContainerDiagnosis(Model):
    name: str
    ready: bool
    restart_count: int
    state: Literal["running", "waiting", "terminated", "unknown"]
    waiting_reason: str | None = None  # CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError, ...
    waiting_message: str | None = None
    last_terminated_reason: str | None = None  # OOMKilled, Error, Completed
    last_exit_code: int | None = None
    last_finished_at: datetime | None = None
    memory_limit: str | None = None
    cpu_limit: str | None = None


class PodDiagnosis(Model):
    namespace: str
    name: str
    phase: str
    ready: bool
    node: str | None = None
    pod_ip: str | None = None
    created_at: datetime | None = None
    terminating: bool = Field(False, description="deletion requested (metadata.deletionTimestamp set): the pod is going away")
    owner_chain: list[str] = Field(default_factory=list, description="e.g. ['ReplicaSet/checkout-5d9f', 'Deployment/checkout']")
    containers: list[ContainerDiagnosis] = Field(default_factory=list)
    conditions: dict[str, str] = Field(default_factory=dict, description="condition type -> status")
    restart_count: int = 0
    restart_rate_per_min: float | None = None
    unhealthy: bool = False
    reasons: list[str] = Field(default_factory=list, description="why this pod counts as unhealthy")


class KubeEvent(Model):
    namespace: str
    involved_kind: str
    involved_name: str
    type: str  # Normal | Warning
    reason: str
    message: str
    count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class LogExcerpt(Model):
    namespace: str
    pod: str
    container: str
    previous: bool
    lines: list[str]
    truncated: bool = False
    redactions: int = Field(0, description="secrets replaced before the excerpt was stored")
    error: str | None = Field(None, description="why no log could be read (e.g. no previous container)")


class QueryResult(Model):
    """An instant PromQL query and its samples (labels -> value)."""

    query: str
    at: datetime = Field(default_factory=utcnow)
    samples: list[tuple[dict[str, str], float]] = Field(default_factory=list)


class RangeSeries(Model):
    query: str
    start: datetime
    end: datetime
    step_seconds: float
    series: list[tuple[dict[str, str], list[tuple[float, float]]]] = Field(default_factory=list)


class ThresholdCheck(Model):
    name: str
    query: str
    value: float | None
    threshold: float
    comparison: Literal[">", ">=", "<", "<=", "=="]
    breached: bool
    no_data: bool = False


class SentryIssue(Model):
    id: str
    short_id: str | None = None
    title: str
    culprit: str | None = None
    level: str | None = None
    count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    permalink: str | None = None


# ------------------------------------------------------------------------------------ findings
class Severity(str, Enum):
    info = "info"
    warning = "warning"
    critical = "critical"


class Finding(Model):
    """One structured conclusion from evidence; the post-mortem is assembled from these."""

    step: str = Field(description="runbook step id that produced it, e.g. 'identify'")
    title: str
    severity: Severity = Severity.warning
    detail: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    root_cause: str | None = Field(None, description="a root-cause statement this finding supports")
    action_items: list[str] = Field(default_factory=list)
    at: datetime = Field(default_factory=utcnow)


# ------------------------------------------------------------------------------------ actions
class ActionKind(str, Enum):
    delete_pods = "delete_pods"
    rollout_restart = "rollout_restart"
    scale = "scale"
    rollout_undo = "rollout_undo"
    patch_resources = "patch_resources"
    inject_fault = "inject_fault"  # drills only: env fault (patch={"env": {...}}), pod kill (pods=[...]) or cluster fault (patch={"fault": KIND})
    remove_fault = "remove_fault"  # drill rollback: patch={"remove_env": [...]} and/or {"clear_faults": true}


class Action(Model):
    kind: ActionKind
    target: WorkloadRef
    pods: list[str] = Field(default_factory=list, description="pod names for delete_pods")
    replicas: int | None = Field(None, description="target replicas for scale")
    patch: dict[str, Any] | None = Field(None, description="strategic-merge patch for patch_resources")
    reason: str = ""
    evidence_score: float = Field(0.0, description="ranking: how strongly the evidence supports this action")
    allow_all_replicas: bool = Field(
        False, description="explicitly allow touching every replica at once (delete all pods, scale to 0)"
    )
    grace_period_seconds: int | None = Field(None, ge=0, description="delete_pods grace period (default 30 s)")

    def describe(self) -> str:
        if self.kind is ActionKind.delete_pods:
            return f"delete (restart) pods {', '.join(self.pods)} in {self.target.namespace}"
        if self.kind is ActionKind.scale:
            return f"scale {self.target} to {self.replicas} replicas"
        if self.kind is ActionKind.rollout_undo:
            return f"roll back {self.target} to the previous ReplicaSet"
        if self.kind is ActionKind.patch_resources:
            return f"patch {self.target} resources"
        if self.kind is ActionKind.inject_fault:
            if self.pods:
                return f"drill fault: delete pods {', '.join(self.pods)} of {self.target}"
            if (self.patch or {}).get("fault"):
                return f"drill fault: {self.patch['fault']} on {self.target}"
            return f"drill fault: set {', '.join(f'{k}={v}' for k, v in ((self.patch or {}).get('env') or {}).items())} on {self.target}"
        if self.kind is ActionKind.remove_fault:
            removed = list((self.patch or {}).get("remove_env") or [])
            if (self.patch or {}).get("clear_faults"):
                removed.append("cluster faults")
            return f"drill rollback: remove {', '.join(removed)} from {self.target}"
        return f"rollout restart {self.target}"


class Decision(str, Enum):
    allowed = "allowed"
    refused = "refused"
    dry_run = "dry-run"


class AuditRecord(Model):
    """Every guard decision, allowed or refused, is one of these (append-only JSON lines)."""

    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(description="who asked: approver or 'auto' / flow-run id")
    flow_run_id: str | None = None
    kube_context: str | None = Field(None, description="kubeconfig context of the cluster acted on (None: the default)")
    action: Action
    decision: Decision
    reason: str
    outcome: str | None = Field(None, description="what happened when executed, or the error")


class ActionResult(Model):
    action: Action
    decision: Decision
    executed: bool
    detail: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


# ------------------------------------------------------------------------------------ runs
ApprovalMode = Literal["required", "auto", "dry-run"]


class TimelineEntry(Model):
    at: datetime
    event: str
    detail: str = ""
    kind: Literal["detected", "step", "approval", "action", "recovered", "escalation", "communication", "note"] = "step"


# ------------------------------------------------------------------------------------ workloads (task library)
class ReplicaSetInfo(Model):
    name: str
    revision: int | None = Field(None, description="deployment.kubernetes.io/revision annotation")
    created_at: datetime | None = None
    replicas: int = 0
    ready_replicas: int = 0
    images: list[str] = Field(default_factory=list)


class ContainerTemplate(Model):
    name: str
    image: str
    env_names: list[str] = Field(default_factory=list, description="names only: values may be secrets")
    memory_limit: str | None = None
    cpu_limit: str | None = None


class WorkloadStatus(Model):
    namespace: str
    name: str
    kind: Literal["Deployment"] = "Deployment"
    replicas: int = Field(0, description="desired (spec.replicas)")
    ready_replicas: int = 0
    available_replicas: int = 0
    updated_replicas: int = 0
    unavailable_replicas: int = 0
    generation: int | None = None
    observed_generation: int | None = None
    revision: int | None = None
    current_replicaset: ReplicaSetInfo | None = None
    previous_replicaset: ReplicaSetInfo | None = None
    containers: list[ContainerTemplate] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
    restarted_at: str | None = Field(None, description="kubectl.kubernetes.io/restartedAt of the template")
    conditions: dict[str, str] = Field(default_factory=dict, description="condition type -> status")


class HealthReport(Model):
    namespace: str
    name: str
    healthy: bool
    ready_replicas: int = 0
    desired_replicas: int = 0
    restarts_stable: bool = False
    total_restarts: int = 0
    waited_seconds: float = 0.0
    detail: str = ""
    settled_at: datetime | None = Field(
        None, description="first observation of the final settled streak (ready == desired, rolled out, no old or "
        "unhealthy pod): when the workload recovered; the stability window follows it")
    settled_after_seconds: float | None = Field(None, description="settled_at, in seconds after the wait began")
