"""Markdown runbooks (runbooks/*.md) parsed with markdown-it-py, with their bindings to flow steps.

Format (the seed's runbook format plus one HTML comment per step):

    # <Title>
    - **Objective**: ...
    - **Tools**: kubectl, Prometheus, ...
    <!-- automation: flow=<flow name> -->
    ### 1. Identify
    <!-- automation: step=identify tasks=find_unhealthy_pods,describe_pod -->
    ...body with ```bash fences...

HTML comments are invisible when the runbook is rendered, so the human text stays clean while the
binding stays next to the step it describes.
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pydantic import BaseModel, Field

from k8s_runbooks.errors import InvalidInput

_BINDING = re.compile(r"<!--\s*automation:(?P<body>.*?)-->", re.S)
_STEP_HEADING = re.compile(r"^(?P<number>\d+)\.\s+(?P<title>.+)$")
_STEP_ID = re.compile(r"^[a-z][a-z0-9-]*$")
_FIELD = re.compile(r"^\*\*(?P<name>[A-Za-z ]+)\*\*\s*:\s*(?P<value>.*)$", re.S)
_COMMAND_LANGS = {"bash", "sh", "shell", "console", "zsh"}
_ALLOWED_KEYS = {"step", "tasks", "flow"}


class RunbookStep(BaseModel):
    id: str
    number: int
    title: str
    body: str = Field(description="the step's Markdown without the binding comment")
    commands: list[str] = Field(default_factory=list, description="shell commands from the step's code fences")
    tasks: list[str] = Field(default_factory=list, description="task names the binding says automate this step")


class Runbook(BaseModel):
    path: str
    title: str
    objective: str = ""
    tools: list[str] = Field(default_factory=list)
    flow: str | None = Field(None, description="name of the flow that automates the runbook")
    steps: list[RunbookStep]
    markdown: str = Field(description="the full source, for publishing as an artifact")

    @property
    def step_ids(self) -> list[str]:
        return [s.id for s in self.steps]

    @property
    def bindings(self) -> dict[str, list[str]]:
        """step id -> task names."""
        return {s.id: s.tasks for s in self.steps}


def _parse_binding(comment: str, where: str) -> dict[str, str]:
    match = _BINDING.search(comment)
    if match is None:
        return {}
    pairs: dict[str, str] = {}
    for item in match.group("body").split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise InvalidInput(f"{where}: malformed automation binding item {item!r}", hint="use key=value, e.g. step=identify")
        if key not in _ALLOWED_KEYS:
            raise InvalidInput(f"{where}: unknown automation binding key {key!r}", hint=f"allowed: {sorted(_ALLOWED_KEYS)}")
        if key in pairs:
            raise InvalidInput(f"{where}: automation binding key {key!r} given twice")
        pairs[key] = value
    return pairs


def _inline_text(tokens: list[Token], start: int) -> str:
    """Content of the inline token following an opening block token."""
    for tok in tokens[start:]:
        if tok.type == "inline":
            return tok.content
    return ""


def parse_runbook(text: str, path: str = "<string>") -> Runbook:
    md = MarkdownIt("commonmark", {"html": True})
    tokens = md.parse(text)
    lines = text.splitlines()

    title: str | None = None
    fields: dict[str, str] = {}
    flow: str | None = None
    headings: list[tuple[int, Token, str]] = []  # (token index, heading_open, text)

    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            content = _inline_text(tokens, i + 1).strip()
            if tok.tag == "h1" and title is None:
                title = content
            if tok.tag in ("h2", "h3"):
                headings.append((i, tok, content))
        elif tok.type == "list_item_open":
            m = _FIELD.match(_inline_text(tokens, i + 1).strip())
            if m:
                fields.setdefault(m.group("name").strip().lower(), " ".join(m.group("value").split()))
        elif tok.type == "html_block" and not any(h for h in headings if _STEP_HEADING.match(h[2])):
            binding = _parse_binding(tok.content, f"{path}: runbook header")
            if "step" in binding or "tasks" in binding:
                raise InvalidInput(f"{path}: step binding {tok.content.strip()!r} appears before the first step heading")
            flow = binding.get("flow", flow)

    if not title:
        raise InvalidInput(f"{path}: the runbook has no title", hint="start it with a '# Title' heading")

    steps: list[RunbookStep] = []
    step_headings = [(i, t, c) for (i, t, c) in headings if _STEP_HEADING.match(c)]
    for n, (index, head, content) in enumerate(step_headings):
        m = _STEP_HEADING.match(content)
        assert m is not None
        number, step_title = int(m.group("number")), m.group("title").strip()
        where = f"{path}: step {number} {step_title!r}"
        end_index = len(tokens)
        for j, tok in enumerate(tokens[index + 1 :], start=index + 1):
            if tok.type == "heading_open" and tok.tag in ("h1", "h2", "h3"):
                end_index = j
                break
        section = tokens[index + 1 : end_index]

        binding: dict[str, str] = {}
        binding_lines: set[int] = set()
        commands: list[str] = []
        for tok in section:
            if tok.type == "html_block" and _BINDING.search(tok.content):
                if binding:
                    raise InvalidInput(f"{where}: more than one automation binding")
                binding = _parse_binding(tok.content, where)
                if tok.map:
                    binding_lines.update(range(tok.map[0], tok.map[1]))
            elif tok.type == "fence" and tok.info.strip().split(" ")[0] in _COMMAND_LANGS:
                commands.extend(line.strip() for line in tok.content.splitlines() if line.strip())
        if not binding:
            raise InvalidInput(f"{where} has no automation binding", hint="add <!-- automation: step=<id> tasks=<task,...> --> under the heading")
        step_id = binding.get("step")
        if not step_id:
            raise InvalidInput(f"{where}: the automation binding has no step=<id>")
        if not _STEP_ID.match(step_id):
            raise InvalidInput(f"{where}: step id {step_id!r} must be lowercase letters, digits and dashes")
        if number != n + 1:
            raise InvalidInput(f"{where}: steps must be numbered 1, 2, 3, ... (expected {n + 1})")

        body_start = head.map[1] if head.map else 0
        body_end = tokens[end_index].map[0] if end_index < len(tokens) and tokens[end_index].map else len(lines)
        body = "\n".join(line for k, line in enumerate(lines[body_start:body_end], start=body_start) if k not in binding_lines)
        tasks = [t for t in binding.get("tasks", "").split(",") if t]
        steps.append(RunbookStep(id=step_id, number=number, title=step_title, body=body.strip("\n"), commands=commands, tasks=tasks))

    if not steps:
        raise InvalidInput(f"{path}: the runbook has no numbered steps", hint="use headings like '### 1. Identify'")
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise InvalidInput(f"{path}: duplicate step id {step.id!r}", hint="every step needs its own step=<id>")
        seen.add(step.id)

    tools = [t.strip() for t in re.split(r",", fields.get("tools", "")) if t.strip()]
    return Runbook(
        path=path,
        title=title,
        objective=fields.get("objective", ""),
        tools=tools,
        flow=flow,
        steps=steps,
        markdown=text,
    )


def load_runbook(path: str | Path) -> Runbook:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"runbook {p} does not exist") from None
    return parse_runbook(text, str(p))


def runbooks_dir() -> Path:
    """The repository's runbooks/ directory (flows and the CLI run from a checkout)."""
    return Path(__file__).resolve().parents[2] / "runbooks"


def check_binding(book: Runbook, flow_steps: list[str], task_names: set[str] | None = None) -> None:
    """The runbook and its flow describe the same steps in the same order, and every bound task exists;
    otherwise InvalidInput naming the unknown or missing step (or task) and the file."""
    unknown = [s for s in book.step_ids if s not in flow_steps]
    if unknown:
        raise InvalidInput(f"{book.path}: unknown step {', '.join(map(repr, unknown))}: flow {book.flow!r} has steps {flow_steps}")
    missing = [s for s in flow_steps if s not in book.step_ids]
    if missing:
        raise InvalidInput(f"{book.path}: flow step {', '.join(map(repr, missing))} is not documented", hint="add a numbered step with its binding")
    if book.step_ids != flow_steps:
        raise InvalidInput(f"{book.path}: steps are in the order {book.step_ids}, the flow runs {flow_steps}")
    if task_names is not None:
        bad = {s.id: [t for t in s.tasks if t not in task_names] for s in book.steps}
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            raise InvalidInput(f"{book.path}: bindings name tasks that do not exist: {bad}")
