"""Alert routing: a validated YAML file maps label matchers to a Prefect deployment, parameters and approval mode.

```yaml
version: 1
label_rules: {namespace: dns_label}        # how label values used in parameters are validated
routes:
  - name: pod-crash
    sources: [alertmanager, grafana]        # default: all
    match: {alertname: PodCrashLooping}     # equality (a missing label equals "")
    match_re: {severity: "critical|page"}   # anchored regular expressions
    deployment: pod-crash/pod-crash         # "<flow name>/<deployment name>"
    approval: required                      # required | auto | dry-run
    parameters:                             # templated: {labels.X}, {labels.X|labels.Y}, {approval}, ...
      params: {namespace: "{labels.namespace}", deployment: "{labels.deployment|labels.service}", approval: "{approval}"}
```

The first matching route wins. Every label value that flows into parameters must pass its rule (Kubernetes name
rules by default), so nothing from a payload can reach a label selector or a PromQL query unvalidated. The workload
the rendered parameters name (`namespace` + `deployment`, else `service`) is the alert's incident: alerts of one
workload join one run (incidents.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from k8s_runbooks.alerts.incidents import workload_key
from k8s_runbooks.alerts.payloads import SOURCES, Alert, Source
from k8s_runbooks.errors import ConfigError, InvalidInput

Approval = Literal["required", "auto", "dry-run"]
Rule = Literal["dns_label", "dns_subdomain", "safe_text"]

RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "dns_label": (re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), 63, "an RFC 1123 label (lower-case alphanumerics and '-')"),
    "dns_subdomain": (
        re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"), 253,
        "an RFC 1123 subdomain (lower-case alphanumerics, '-' and '.')",
    ),
    "safe_text": (re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]*"), 128, "letters, digits, spaces and _ . : -"),
}
DEFAULT_RULES: dict[str, Rule] = {"namespace": "dns_label", "alertname": "safe_text"}
DEFAULT_RULE: Rule = "dns_subdomain"
BUILTINS = ("approval", "source", "route", "fingerprint", "starts_at")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LABEL_REF = re.compile(r"labels\.([A-Za-z_][A-Za-z0-9_]*)")


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str):
        return _PLACEHOLDER.findall(value)
    if isinstance(value, dict):
        return [p for v in value.values() for p in _placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in _placeholders(v)]
    return []


def _check_placeholder(expr: str) -> None:
    for part in expr.split("|"):
        part = part.strip()
        if part not in BUILTINS and not _LABEL_REF.fullmatch(part):
            raise ValueError(
                f"unknown placeholder {{{expr}}}: use {{labels.NAME}}, {{labels.A|labels.B}} or one of {', '.join(BUILTINS)}"
            )


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][-a-z0-9_.]*$", max_length=63)
    sources: list[Source] = Field(default_factory=lambda: list(SOURCES), min_length=1)
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    deployment: str = Field(pattern=r"^[^/\s]+/[^/\s]+$", description='"<flow name>/<deployment name>"')
    approval: Approval = "required"
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{label}: invalid regular expression {pattern!r}: {exc}") from None
        return value

    @field_validator("parameters")
    @classmethod
    def _templates(cls, value: dict[str, Any]) -> dict[str, Any]:
        for expr in _placeholders(value):
            _check_placeholder(expr)
        return value

    @model_validator(mode="after")
    def _has_matcher(self) -> Route:
        if not self.match and not self.match_re:
            raise ValueError(f"route {self.name!r} has no matcher: give `match` or `match_re` (a catch-all must say so, e.g. match_re: {{alertname: '.+'}})")
        return self


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    label_rules: dict[str, Rule] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> RoutesFile:
        seen: set[str] = set()
        for route in self.routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} is used twice")
            seen.add(route.name)
        return self


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one firing alert: dispatch (route set, no reason), ignore or reject (reason set)."""

    outcome: Literal["dispatch", "ignored", "rejected"]
    route: str | None = None
    deployment: str | None = None
    parameters: dict[str, Any] | None = None
    approval: Approval | None = None
    tags: tuple[str, ...] = ()
    reason: str | None = None
    incident: str | None = None  # the workload the parameters name (incidents.workload_key); None: the alert alone


class _CompiledRoute:
    __slots__ = ("route", "eq", "regex")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.eq = tuple(route.match.items())
        self.regex = tuple((k, re.compile(v)) for k, v in route.match_re.items())

    def matches(self, alert: Alert) -> bool:
        if alert.source not in self.route.sources:
            return False
        labels = alert.labels
        return all(labels.get(k, "") == v for k, v in self.eq) and all(
            r.fullmatch(labels.get(k, "")) for k, r in self.regex
        )


class Router:
    def __init__(self, config: RoutesFile, source: str = "<routes>") -> None:
        self.config = config
        self.source = source
        self.rules = {**DEFAULT_RULES, **config.label_rules}
        self._routes = [_CompiledRoute(r) for r in config.routes]

    def match(self, alert: Alert) -> Route | None:
        """The first route whose matchers accept the alert (parameters not rendered)."""
        for compiled in self._routes:
            if compiled.matches(alert):
                return compiled.route
        return None

    def decide(self, alert: Alert) -> Decision:
        route = self.match(alert)
        if route is None:
            return Decision("ignored", reason=f"no route matches alertname={alert.alertname!r} (source {alert.source})")
        try:
            params = self._render(route.parameters, alert, route, path="")
        except InvalidInput as exc:
            return Decision("rejected", route=route.name, deployment=route.deployment, reason=str(exc))
        return Decision("dispatch", route=route.name, deployment=route.deployment, parameters=params,
                        approval=route.approval, tags=tuple(route.tags), incident=workload_key(params))

    def validate_label(self, name: str, value: str) -> str:
        rule = self.rules.get(name, DEFAULT_RULE)
        pattern, max_len, what = RULES[rule]
        if len(value) > max_len or not pattern.fullmatch(value):
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise InvalidInput(f"label {name}={shown!r} is not {what}, at most {max_len} characters ({rule})")
        return value

    def _resolve(self, expr: str, alert: Alert, route: Route, path: str) -> str:
        builtins = {"approval": route.approval, "source": alert.source, "route": route.name,
                    "fingerprint": alert.fingerprint, "starts_at": alert.starts_at}
        names = []
        for part in (p.strip() for p in expr.split("|")):
            if part in builtins:
                return builtins[part]
            label = part.removeprefix("labels.")
            names.append(label)
            value = alert.labels.get(label)
            if value:
                return self.validate_label(label, value)
        raise InvalidInput(f"label {' or '.join(names)} missing (needed by parameter {path})")

    def _render(self, value: Any, alert: Alert, route: Route, path: str) -> Any:
        if isinstance(value, dict):
            return {k: self._render(v, alert, route, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, alert, route, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str) or "{" not in value:
            return value
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return self._resolve(whole.group(1), alert, route, path)
        return _PLACEHOLDER.sub(lambda m: self._resolve(m.group(1), alert, route, path), value)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, or of the deepest node found."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def parse_routes(text: str, source: str = "<routes>") -> Router:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the routes file must be a mapping with a `routes:` list")
    try:
        config = RoutesFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: {field}: {err['msg']}")
        raise ConfigError("invalid alert routes:\n  " + "\n  ".join(problems)) from None
    return Router(config, source)


def load_routes(path: Path) -> Router:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the alert routes file {path}: {exc.strerror or exc}",
                          hint="set K8S_RUNBOOKS_RECEIVER_ROUTES or pass --routes") from None
    return parse_routes(text, str(path))
