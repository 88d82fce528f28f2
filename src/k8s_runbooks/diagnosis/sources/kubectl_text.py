"""Parsers for kubectl's text output: `get` tables (column-aligned by tabwriter), `describe` documents
(indented `Key: value` trees with tables inside), ages ("3d7h", "21s (x6 over 100s)").

They never raise on odd input: unknown lines are kept as raw lines, missing columns read as "".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_AGE_PART = re.compile(r"(\d+)([smhdy])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def parse_age(text: str | None) -> float | None:
    """'3d7h' -> seconds; the first age of '21s (x6 over 100s)'; None for '<unknown>' or garbage."""
    if not text:
        return None
    head = text.strip().split(" ", 1)[0]
    parts = _AGE_PART.findall(head)
    if not parts or "".join(n + u for n, u in parts) != head:
        return None
    return float(sum(int(n) * _AGE_SECONDS[u] for n, u in parts))


_COUNT = re.compile(r"\(x(\d+) over ([^)]+)\)")


def event_count(age_text: str) -> int:
    m = _COUNT.search(age_text or "")
    return int(m.group(1)) if m else 1


def parse_table(text: str) -> list[dict[str, str]]:
    """A `kubectl get` table as rows of {HEADER: value}. Columns start where their header starts."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return []
    return table_rows(lines[0], lines[1:])


def table_rows(header: str, lines: list[str]) -> list[dict[str, str]]:
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[s:].split("  ", 1)[0].strip() for s in starts]
    rows: list[dict[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        row: dict[str, str] = {}
        for i, (name, start) in enumerate(zip(names, starts)):
            end = starts[i + 1] if i + 1 < len(starts) else None
            cell = line[start:end] if end is not None else line[start:]
            row[name] = cell.strip()
        # A cell wider than its header column pushes the rest right: fall back to splitting on 2+ spaces.
        if len(line) > 0 and any(line[s - 1:s] not in (" ", "") for s in starts[1:] if s < len(line)):
            parts = re.split(r"\s{2,}", line.strip())
            if len(parts) == len(names):
                row = dict(zip(names, parts))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ describe
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9 ._/()#-]*?):(?:(?P<gap> +)(?P<value>.*?))?\s*$")


@dataclass
class DNode:
    key: str
    value: str = ""
    indent: int = 0
    value_col: int | None = None
    children: list["DNode"] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # raw lines (tables, continuation values)

    def get(self, key: str) -> "DNode | None":
        return next((c for c in self.children if c.key == key), None)

    def val(self, key: str, default: str = "") -> str:
        node = self.get(key)
        return node.value if node is not None else default

    def values(self, key: str) -> list[str]:
        """A multi-line field (Labels, Taints, Tolerations): the first value and its continuation lines."""
        node = self.get(key)
        if node is None:
            return []
        out = [node.value] if node.value and node.value != "<none>" else []
        return out + [ln.strip() for ln in node.lines if ln.strip()]


def parse_describe(text: str) -> DNode:
    """An indentation tree of `kubectl describe` output; `Events:` keeps its table as raw lines."""
    root = DNode(key="", indent=-1)
    stack: list[DNode] = [root]
    raw_section: DNode | None = None
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if raw_section is not None:
            if indent > raw_section.indent:
                raw_section.lines.append(line)
                continue
            raw_section = None
        last = stack[-1]
        # Continuation of a multi-line value: aligned at (or past) the value column of the last key.
        if last is not root and last.value_col is not None and indent >= last.value_col and not last.children:
            last.lines.append(line)
            continue
        m = _KEY.match(line)
        while len(stack) > 1 and stack[-1].indent >= indent:
            stack.pop()
        parent = stack[-1]
        if not m:
            parent.lines.append(line)
            continue
        key, value = m.group("key").strip(), (m.group("value") or "").strip()
        col = (len(m.group("indent")) + len(m.group("key")) + 1 + len(m.group("gap"))) if m.group("gap") else None
        node = DNode(key=key, value=value, indent=indent, value_col=col)
        parent.children.append(node)
        stack.append(node)
        if key == "Events" and not value:
            raw_section = node
    return root


def events_table(node: DNode | None) -> list[dict[str, str]]:
    """Rows of a describe `Events:` table (Type, Reason, Age, From, Message)."""
    if node is None or not node.lines:
        return []
    lines = [ln for ln in node.lines if not set(ln.strip()) <= {"-", " "}]
    if not lines:
        return []
    return table_rows(lines[0], lines[1:])


def parse_selector(text: str) -> dict[str, str]:
    """'app=x,tier=y' -> {'app': 'x', 'tier': 'y'}; '<none>' -> {}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out
