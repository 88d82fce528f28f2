"""The text of a recorded case as kubectl wrote it, for bench/_perturb.py: `kubectl get` tables and describe output
mapped cell by cell and re-aligned as kubectl's tabwriter does, any JSON value walked string by string, the case's
files read and written, and each case's own seeded random source."""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path
from typing import Any, Callable

_COLUMN = re.compile(r"\S+(?: \S+)*")
_HEADER_WORD = re.compile(r"^[A-Z][A-Z0-9()/_-]*(?: [A-Z][A-Z0-9()/_-]*)*$")

# --------------------------------------------------------------------------------------------- tables


def columns(header: str) -> tuple[list[str], list[int]]:
    starts = [m.start() for m in _COLUMN.finditer(header)]
    return [header[s:].split("  ", 1)[0].strip() for s in starts], starts


def cells(line: str, starts: list[int]) -> list[str]:
    return [line[s:(starts[i + 1] if i + 1 < len(starts) else None)].strip() for i, s in enumerate(starts)]


def _render(rows: list[list[str]], padding: int, indent: str = "") -> list[str]:
    """tabwriter: every column but the last as wide as its widest cell plus `padding`."""
    widths = [max(len(r[i]) for r in rows) + padding for i in range(len(rows[0]) - 1)]
    return [(indent + "".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1]).rstrip() for r in rows]


def is_get_table(text: str) -> bool:
    first = text.lstrip("\n").split("\n", 1)[0]
    names, _ = columns(first)
    return bool(names) and names[0] in ("NAME", "NAMESPACE", "LAST SEEN", "TYPE") and all(_HEADER_WORD.match(n) for n in names)


CellFn = Callable[[str, str], str]


def map_get_table(text: str, cell: CellFn, rng: random.Random | None) -> str:
    lines = text.split("\n")
    head_i = next(i for i, ln in enumerate(lines) if ln.strip())
    names, starts = columns(lines[head_i])
    body = [ln for ln in lines[head_i + 1:] if ln.strip()]
    rows = [[cell(n, c) for n, c in zip(names, cells(ln, starts))] for ln in body]
    if rng is not None:
        rng.shuffle(rows)
    trailing = "\n" if text.endswith("\n") else ""
    return "\n".join(lines[:head_i] + _render([names] + rows, 3)) + trailing


def map_describe(text: str, line_fn: Callable[[str], str], cell: CellFn, rng: random.Random | None) -> str:
    """Free text through `line_fn`; the tables inside (a header line, a line of dashes, rows at the header's
    indentation) cell by cell, re-aligned; the rows of an `Events:` table shuffled when `rng` is given."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) <= {"-", " "} and line.strip() and not line.rstrip().endswith(":"):
            indent = line[:len(line) - len(line.lstrip(" "))]
            names, starts = columns(line)
            if len(names) < 2:
                out.append(line_fn(line))
                i += 1
                continue
            j = i + 2
            body = []
            while j < len(lines) and lines[j].strip() and lines[j].startswith(indent) and (
                    len(lines[j]) - len(lines[j].lstrip(" "))) == len(indent):
                body.append(lines[j])
                j += 1
            rows = [[cell(n, c) for n, c in zip(names, cells(ln, starts))] for ln in body]
            if rng is not None and names[:2] == ["Type", "Reason"]:
                rng.shuffle(rows)
            dashes = [re.sub(r"\S", "-", n) for n in names]
            out += _render([names, dashes] + rows, 2, indent)
            i = j
            continue
        out.append(line_fn(line))
        i += 1
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- walking a case


def walk(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, list):
        return [walk(v, text) for v in value]
    if isinstance(value, dict):
        return {text(k) if isinstance(k, str) else k: walk(v, text) for k, v in value.items()}
    return value


def transform_cache(cache: dict[str, Any], text: Callable[[str], str], cell: CellFn, rng: random.Random | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cache.items():
        tool = key.split(":", 1)[0]
        if isinstance(value, str) and tool == "GetResources" and value.strip() and is_get_table(value):
            new = map_get_table(value, cell, rng)
        elif isinstance(value, str) and tool == "DescribeResource":
            new = map_describe(value, text, cell, rng)
        else:
            new = walk(value, text)
        out[text(key)] = new
    if rng is not None:
        items = list(out.items())
        rng.shuffle(items)
        out = dict(items)
    return out


def case_rng(rel: str, kind: str) -> random.Random:
    return random.Random(zlib.crc32(f"{kind}:{rel}".encode()))


def read_case(src: Path) -> dict[str, Any]:
    raw = src / "raw_data"
    files: dict[str, Any] = {
        "metadata.json": json.loads((src / "metadata.json").read_text(encoding="utf-8")),
        "tool_cache.json": json.loads((src / "tool_cache.json").read_text(encoding="utf-8")),
    }
    for name in ("logs.json", "alert.json"):
        if (raw / name).is_file():
            files[f"raw_data/{name}"] = json.loads((raw / name).read_text(encoding="utf-8", errors="replace"))
    if (raw / "metrics.csv").is_file():
        files["raw_data/metrics.csv"] = (raw / "metrics.csv").read_text(encoding="utf-8-sig", errors="replace")
    return files


def write_case(dst: Path, files: dict[str, Any]) -> None:
    (dst / "raw_data").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = dst / name
        path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False), encoding="utf-8")


def trie_pattern(words: list[str]) -> str:
    """An alternation of `words` factored by common prefixes: Python's re tries alternatives one by one, and a
    case holds megabytes of text against ~100 names."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        end = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if end else body

    return build(trie)
