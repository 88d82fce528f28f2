"""Approval policies (`deployments/chatops.yaml`): who may approve, the two-person rule and the escalation chain,
per alert route or namespace. Read by the flows (what to post, when to escalate) and by the receiver (who may
answer).

```yaml
version: 1
policies:
  - name: shop
    routes: [pod-crash]              # alert routes (the run's `alert-route:<name>` tag) ...
    namespaces: ["shop", "drill-.*"] # ... or namespaces (anchored regular expressions); first policy matching wins
    channel: C0123ABCDEF             # Slack channel id of the approval message (default K8S_RUNBOOKS_SLACK_CHANNEL)
    approvers:
      users: [U0123ALICE]            # Slack user ids
      groups: [S0123ONCALL]          # Slack user group ids (members looked up with usergroups.users.list)
    two_person_min_pods: 3           # an action touching at least this many pods needs two distinct approvers
    escalation:                      # after approval_timeout_seconds without an answer, or on a rejection
      - {notify: channel, wait_seconds: 300}
      - {notify: page, routing_key: primary, wait_seconds: 600}
      - {notify: page, routing_key: secondary}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from k8s_runbooks.errors import ConfigError

_SLACK_ID = r"^[A-Z0-9]{2,32}$"


class Approvers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, description="Slack user ids (U..., W...).")
    groups: list[str] = Field(default_factory=list, description="Slack user group ids (S...).")

    @field_validator("users", "groups")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for v in value:
            if not re.fullmatch(_SLACK_ID, v):
                raise ValueError(f"{v!r} is not a Slack id (upper-case letters and digits, e.g. U0123ABCD): names change, ids don't")
        return value


class Level(BaseModel):
    """One escalation step: notify, then keep the approval open `wait_seconds` before the next step."""

    model_config = ConfigDict(extra="forbid")

    notify: Literal["channel", "page"]
    channel: str | None = Field(None, description="channel: where to post (default: the policy's channel).")
    routing_key: Literal["primary", "secondary"] = Field("primary", description="page: which PagerDuty service.")
    wait_seconds: int = Field(0, ge=0, le=86_400)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][-a-z0-9_.]*$", max_length=63)
    routes: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    channel: str | None = None
    approvers: Approvers = Field(default_factory=Approvers)
    two_person_min_pods: int | None = Field(None, ge=1)
    escalation: list[Level] = Field(default_factory=list, max_length=10)

    @field_validator("namespaces")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"namespaces: invalid regular expression {pattern!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _matches_something(self) -> Policy:
        if not self.routes and not self.namespaces:
            raise ValueError(f"policy {self.name!r} matches nothing: give `routes` or `namespaces` (all: namespaces: ['.*'])")
        return self

    def matches(self, route: str | None, namespace: str) -> bool:
        return (route is not None and route in self.routes) or any(re.fullmatch(p, namespace) for p in self.namespaces)

    def needs_two(self, pods: int) -> bool:
        """The two-person rule applies to an action touching `pods` pods."""
        return self.two_person_min_pods is not None and pods >= self.two_person_min_pods


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    policies: list[Policy] = Field(default_factory=list)


@dataclass(frozen=True)
class Policies:
    policies: tuple[Policy, ...]
    source: str

    def for_run(self, route: str | None, namespace: str) -> Policy | None:
        """The first policy matching the run's alert route or namespace; None: nobody may approve in Slack."""
        return next((p for p in self.policies if p.matches(route, namespace)), None)


def parse_policies(text: str, source: str = "<chatops>") -> Policies:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{source}: invalid approval policies: {problems}") from None
    return Policies(tuple(parsed.policies), source)


def load_policies(path: Path) -> Policies:
    """The policies file; a missing file means no policies (Slack approvals off), an invalid one is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Policies((), f"{path} (missing)")
    except OSError as exc:
        raise ConfigError(f"cannot read the approval policies {path}: {exc.strerror or exc}",
                          hint="set K8S_RUNBOOKS_CHATOPS_CONFIG") from None
    return parse_policies(text, str(path))


def pods_touched(kind: str, pods: list[str], replicas: int | None, desired: int) -> int:
    """The blast radius the guard counts for an action (see guard.Guard._blast): pods named, replicas removed by
    a scale-down, every replica for a rollout (undo, restart, resource patch)."""
    if kind == "delete_pods" or (kind == "inject_fault" and pods):
        return len(set(pods))
    if kind == "scale":
        return max(0, desired - (replicas if replicas is not None else desired))
    if kind == "remove_fault":
        return 0
    return desired
