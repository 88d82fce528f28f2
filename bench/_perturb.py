"""Perturbations of a recorded Cloud-OpsBench case that an unseen case could show (bench/diagnosis_robustness.py).

Each takes a case folder and writes a changed copy; the answer key in metadata.json changes with it (a renamed
workload is renamed in `result.fault_object` too), so the bench scores the copy against its own answer.

- `rename`: every workload, Service, pod, ConfigMap/Secret/claim name, node name, namespace and private IP is
  renamed consistently, everywhere (kubectl text, manifests, logs, events, the tool cache's keys, alerts, metric
  columns). The name's own words are kept (`ts-order-service` -> `nova-order-api`, `cartservice` ->
  `nova-cart-api`): another organisation's naming convention, not another application.
- `rename-opaque`: the same, but every name becomes unrelated words (`amber-otter`): nothing a name says survives.
- `reorder`: rows of every `kubectl get` table and of every describe `Events:` table shuffled, and the order in
  which the tools were called.
- `drop`: one optional tool output removed at random (all logs, the alerts, the metrics, or one describe).
- `shift`: the snapshot taken later: every age (AGE, LAST SEEN, `(97s ago)`, an event's `3m (x5 over 10m)`) grows
  by AGE_SHIFT, and absolute timestamps (logs, describe, systemd journals, alerts, metrics) move by CLOCK_SHIFT.

Tables are re-aligned as kubectl's tabwriter does (a longer name widens its column), so the text stays what kubectl
would print. Deterministic: the random choices are seeded by the case's relative path.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

KINDS = ("rename", "rename-opaque", "reorder", "drop", "shift")
AGE_SHIFT = timedelta(minutes=5)
CLOCK_SHIFT = timedelta(days=400, hours=3, minutes=17, seconds=29)

_COLUMN = re.compile(r"\S+(?: \S+)*")
_HEADER_WORD = re.compile(r"^[A-Z][A-Z0-9()/_-]*(?: [A-Z][A-Z0-9()/_-]*)*$")

# --------------------------------------------------------------------------------------------- tables


def _columns(header: str) -> tuple[list[str], list[int]]:
    starts = [m.start() for m in _COLUMN.finditer(header)]
    return [header[s:].split("  ", 1)[0].strip() for s in starts], starts


def _cells(line: str, starts: list[int]) -> list[str]:
    return [line[s:(starts[i + 1] if i + 1 < len(starts) else None)].strip() for i, s in enumerate(starts)]


def _render(rows: list[list[str]], padding: int, indent: str = "") -> list[str]:
    """tabwriter: every column but the last as wide as its widest cell plus `padding`."""
    widths = [max(len(r[i]) for r in rows) + padding for i in range(len(rows[0]) - 1)]
    return [(indent + "".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1]).rstrip() for r in rows]


def is_get_table(text: str) -> bool:
    first = text.lstrip("\n").split("\n", 1)[0]
    names, _ = _columns(first)
    return bool(names) and names[0] in ("NAME", "NAMESPACE", "LAST SEEN", "TYPE") and all(_HEADER_WORD.match(n) for n in names)


CellFn = Callable[[str, str], str]


def map_get_table(text: str, cell: CellFn, rng: random.Random | None) -> str:
    lines = text.split("\n")
    head_i = next(i for i, ln in enumerate(lines) if ln.strip())
    names, starts = _columns(lines[head_i])
    body = [ln for ln in lines[head_i + 1:] if ln.strip()]
    rows = [[cell(n, c) for n, c in zip(names, _cells(ln, starts))] for ln in body]
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
            names, starts = _columns(line)
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
            rows = [[cell(n, c) for n, c in zip(names, _cells(ln, starts))] for ln in body]
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


def _walk(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, list):
        return [_walk(v, text) for v in value]
    if isinstance(value, dict):
        return {text(k) if isinstance(k, str) else k: _walk(v, text) for k, v in value.items()}
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
            new = _walk(value, text)
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


# --------------------------------------------------------------------------------------------- rename

_WORDS_A = ("amber", "brisk", "cobalt", "dusky", "eager", "fuzzy", "gentle", "hollow", "ivory", "jolly", "keen", "lunar",
            "misty", "noble", "olive", "proud", "quiet", "rapid", "silent", "tidy", "umber", "vivid", "wild", "young", "zesty")
_WORDS_B = ("otter", "heron", "maple", "comet", "falcon", "willow", "ember", "lynx", "quartz", "bison", "cedar", "finch",
            "glacier", "harbor", "iris", "juniper", "koala", "lotus", "meadow", "nectar", "orca", "pebble", "raven",
            "sparrow", "tundra", "walrus", "yak", "zephyr")
_PREFIXES = ("nova", "acme", "orbit", "zen")
_SUFFIXES = ("-api", "-svc", "-srv", "-app")
_SKIP = {"default", "kube-root-ca.crt", "kubernetes", "none", "<none>"}
_IP = re.compile(r"(?<![\d.])(?P<a>\d{1,3})\.(?P<b>\d{1,3})\.(?P<c>\d{1,3})\.(?P<d>\d{1,3})(?![\d])")
_NOT_A_NODE_NAME = re.compile(r"(?:\.io/|role=|role\": \"|Roles:\s+|ROLES\s+)$")
_NAMESPACED_TABLES = ("deployments", "statefulsets", "daemonsets", "services", "configmaps", "secrets", "serviceaccounts",
                      "persistentvolumeclaims", "endpoints", "jobs", "ingresses", "replicasets", "pods", "networkpolicies")
_HASHED = re.compile(r"^(?P<base>.+?)-[a-z0-9]{6,10}(?:-[a-z0-9]{5})?$")
_ORDINAL = re.compile(r"^(?P<base>.+)-\d+$")


def _table_names(text: str) -> list[str]:
    if not isinstance(text, str) or not text.strip() or not is_get_table(text):
        return []
    lines = [ln for ln in text.split("\n") if ln.strip()]
    names, starts = _columns(lines[0])
    if "NAME" not in names:
        return []
    i = names.index("NAME")
    return [c for c in (_cells(ln, starts)[i] for ln in lines[1:]) if c]


def vocabulary(files: dict[str, Any]) -> tuple[set[str], set[str], str]:
    """(object names, node names, namespace) of a case: from the lists kubectl printed, the tools' arguments,
    the dependency trees, the logs' keys and the answer's object."""
    meta, cache = files["metadata.json"], files["tool_cache.json"]
    ns = str(meta.get("namespace", ""))
    names: set[str] = set()
    nodes: set[str] = set()
    for key, value in cache.items():
        tool, _, arg_text = key.partition(":")
        try:
            args = json.loads(arg_text) if arg_text.startswith("{") else {}
        except ValueError:
            args = {}
        kind = str(args.get("resource_type", ""))
        if tool == "GetResources" and not args.get("name") and kind == "nodes":
            nodes |= set(_table_names(value))
        elif tool == "GetResources" and not args.get("name") and kind in _NAMESPACED_TABLES and args.get("namespace") == ns:
            for n in _table_names(value):
                m = _HASHED.match(n) if kind in ("pods", "replicasets") else None
                m = m or (_ORDINAL.match(n) if kind == "pods" else None)
                names.add(m.group("base") if m else n)
        for field in ("app_name", "service_name"):
            if isinstance(args.get(field), str) and args[field]:
                names.add(args[field])
        if tool == "GetServiceDependencies" and isinstance(value, str):
            names |= set(re.findall(r"[├└]── (\S+)", value))
            up = re.search(r"^\[Upstream[^:]*:(.*)$", value, re.M)
            names |= {s.strip() for s in (up.group(1).split(",") if up else []) if s.strip() and not s.strip().startswith("(")}
    logs = files.get("raw_data/logs.json")
    if isinstance(logs, dict):
        names |= {re.sub(r"\.(previous|istio-proxy|app)$", "", str(k)) for k in logs}
    obj = str((meta.get("result") or {}).get("fault_object", ""))
    kind, _, name = obj.partition("/")
    (nodes if kind == "node" else names).add(name) if kind in ("app", "node") else None
    names = {n for n in names if len(n) >= 3 and n not in _SKIP and not n.startswith(("istio-", "sh.helm.", "kube-"))
             and re.fullmatch(r"[a-z0-9][a-z0-9.-]*", n) and n != ns} - nodes
    return names, nodes, ns


def _core(name: str, system_prefix: str | None) -> tuple[str, bool]:
    tokens = name.split("-")
    if system_prefix and tokens[0] == system_prefix and len(tokens) > 1:
        tokens = tokens[1:]
    if len(tokens) > 1 and tokens[-1] == "service":
        return "-".join(tokens[:-1]), True
    if tokens[-1].endswith("service") and len(tokens[-1]) > len("service"):
        tokens[-1] = tokens[-1][:-len("service")]
        return "-".join(tokens), True
    return "-".join(tokens), False


def rename_map(names: set[str], nodes: set[str], ns: str, rel: str, opaque: bool) -> dict[str, str]:
    rng = case_rng(rel, "rename")
    out: dict[str, str] = {}
    taken: set[str] = set()

    def unique(candidate: str) -> str:
        base, n = candidate, 2
        while candidate in taken or candidate in names or candidate in nodes:
            candidate, n = f"{base}{n}", n + 1
        taken.add(candidate)
        return candidate

    firsts = [n.split("-", 1)[0] for n in names if "-" in n]
    common = max(set(firsts), key=firsts.count) if firsts else None
    system_prefix = common if common and len(common) <= 3 and firsts.count(common) * 2 >= len(names) else None
    prefix, suffix = rng.choice(_PREFIXES), rng.choice(_SUFFIXES)
    words = [f"{a}-{b}" for a in _WORDS_A for b in _WORDS_B]
    rng.shuffle(words)
    for name in sorted(names):
        if opaque:
            out[name] = unique(words.pop())
        else:
            core, service = _core(name, system_prefix)
            out[name] = unique(f"{prefix}-{core}{suffix if service else ''}")
    for i, node in enumerate(sorted(nodes)):
        out[node] = unique(f"gke-prod-pool-{i + 1}-{zlib.crc32((rel + node).encode()) & 0xffffffff:08x}"[:40])
    out[ns] = unique(f"{rng.choice(_WORDS_A)}-prod" if not opaque else f"{rng.choice(_WORDS_B)}-{rng.choice(_WORDS_A)}")
    return out


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


class Renamer:
    """One pass over any text: names, their UPPER_SNAKE forms (Kubernetes' service env variables) and private IPs."""

    def __init__(self, mapping: dict[str, str], nodes: set[str], ns: str, texts: list[str]) -> None:
        self.mapping, self.nodes, self.ns = mapping, nodes, ns
        self.upper = {k.upper().replace("-", "_"): v.upper().replace("-", "_") for k, v in mapping.items() if "-" in k}
        words = sorted(mapping, key=lambda s: (-len(s), s))
        uppers = sorted(self.upper, key=lambda s: (-len(s), s))
        self.pattern = re.compile(
            r"(?<![\w-])(?P<name>" + trie_pattern(words) + r")(?![\w])"
            + (r"|(?<![A-Za-z0-9])(?P<upper>" + trie_pattern(uppers) + r")(?![A-Za-z0-9])" if uppers else "")
            + r"|" + _IP.pattern)
        self.ips = self._ip_prefixes(texts)

    @staticmethod
    def _ip_prefixes(texts: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
        seen: set[tuple[str, str]] = set()
        for t in texts:
            for m in _IP.finditer(t):
                if m.group("a") in ("10", "172", "192") and all(int(m.group(g)) < 256 for g in "abcd"):
                    seen.add((m.group("a"), m.group("b")))
        free = [(10, b) for b in (31, 47, 59, 83, 97, 113, 131, 151, 167, 181, 199, 211, 223, 239)]
        free = [p for p in free if (str(p[0]), str(p[1])) not in seen]
        return {p: free[i % len(free)] for i, p in enumerate(sorted(seen))}

    def _sub(self, m: re.Match[str]) -> str:
        if m.group("name"):
            word = m.group("name")
            before = m.string[max(0, m.start() - 40):m.start()]
            if word != self.ns and before.endswith("."):
                return word  # a Java package, a Helm release name: not this object
            if word in self.nodes and _NOT_A_NODE_NAME.search(before):
                return word  # a role (`kubernetes.io/role=master`), not the node
            return self.mapping[word]
        if m.groupdict().get("upper"):
            return self.upper[m.group("upper")]
        prefix = self.ips.get((m.group("a"), m.group("b")))
        if prefix is None:
            return m.group(0)
        return f"{prefix[0]}.{prefix[1]}.{m.group('c')}.{m.group('d')}"

    def text(self, s: str) -> str:
        return self.pattern.sub(self._sub, s)

    def cell(self, column: str, s: str) -> str:
        return s if column == "ROLES" else self.text(s)


def _all_text(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            _all_text(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            out.append(str(k))
            _all_text(v, out)
    return out


def rename(files: dict[str, Any], rel: str, opaque: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    names, nodes, ns = vocabulary(files)
    mapping = rename_map(names, nodes, ns, rel, opaque)
    r = Renamer(mapping, nodes, ns, _all_text(files, []))
    out = {"metadata.json": _walk(files["metadata.json"], r.text),
           "tool_cache.json": transform_cache(files["tool_cache.json"], r.text, r.cell, None)}
    for name in ("raw_data/logs.json", "raw_data/alert.json"):
        if name in files:
            out[name] = _walk(files[name], r.text)
    if "raw_data/metrics.csv" in files:
        out["raw_data/metrics.csv"] = r.text(files["raw_data/metrics.csv"])
    # What is left of the old names (a whole-word match where a rename was expected): the perturbation's own check.
    long_names = [n for n in names if len(n) >= 5]
    left = re.compile(r"(?<![\w.-])(?:" + trie_pattern(long_names) + r")(?![\w-])") if long_names else None
    leftovers = sum(len(left.findall(t)) for t in _all_text(out, [])) if left else 0
    return out, {"names": len(names), "nodes": len(nodes), "leftover_old_names": leftovers}


# --------------------------------------------------------------------------------------------- reorder, drop


def reorder(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = case_rng(rel, "reorder")
    out = dict(files)
    out["tool_cache.json"] = transform_cache(files["tool_cache.json"], lambda s: s, lambda c, s: s, rng)
    return out, {}


def drop(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = case_rng(rel, "drop")
    cache = files["tool_cache.json"]
    options = []
    if "raw_data/logs.json" in files or any(k.startswith("GetErrorLogs:") and v for k, v in cache.items()):
        options.append("logs")
    if "raw_data/alert.json" in files or "GetAlerts:{}" in cache:
        options.append("alerts")
    if "raw_data/metrics.csv" in files:
        options.append("metrics")
    describes = sorted(k for k in cache if k.startswith("DescribeResource:"))
    if describes:
        options.append("describe")
    choice = rng.choice(options) if options else "nothing"
    out = dict(files)
    detail = choice
    if choice == "logs":
        out.pop("raw_data/logs.json", None)
        out["tool_cache.json"] = {k: v for k, v in cache.items() if not k.startswith("GetErrorLogs:")}
    elif choice == "alerts":
        out.pop("raw_data/alert.json", None)
        out["tool_cache.json"] = {k: v for k, v in cache.items() if not k.startswith("GetAlerts:")}
    elif choice == "metrics":
        out.pop("raw_data/metrics.csv")
    elif choice == "describe":
        key = rng.choice(describes)
        out["tool_cache.json"] = {k: v for k, v in cache.items() if k != key}
        detail = "describe " + json.loads(key.split(":", 1)[1]).get("resource_type", "?")
    return out, {"dropped": detail}


# --------------------------------------------------------------------------------------------- shift

_AGE = re.compile(r"^(?:\d+[smhdy])+$")
_AGE_PART = re.compile(r"(\d+)([smhdy])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def human_duration(seconds: int) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl prints ages."""
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _older(age: str) -> str:
    if not _AGE.match(age):
        return age
    return human_duration(sum(int(n) * _UNITS[u] for n, u in _AGE_PART.findall(age)) + int(AGE_SHIFT.total_seconds()))


def _age_cell(column: str, cell: str) -> str:
    if column in ("AGE", "LAST SEEN", "FIRST SEEN", "Age"):
        # '3m', '3m (x5 over 10m)'
        return re.sub(r"(?<![\w])(?:\d+[smhdy])+(?![\w])", lambda m: _older(m.group(0)), cell)
    if column == "RESTARTS":
        return re.sub(r"\((?P<age>(?:\d+[smhdy])+) ago\)", lambda m: f"({_older(m.group('age'))} ago)", cell)
    return cell


_CLOCKS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []


def _clock(pattern: str) -> Callable[[Callable[[re.Match[str]], str]], Callable[[re.Match[str]], str]]:
    def register(fn: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        _CLOCKS.append((re.compile(pattern), fn))
        return fn
    return register


@_clock(r"\b(?P<dt>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)")
def _iso(m: re.Match[str]) -> str:
    sep = m.group("dt")[10]
    return (datetime.strptime(m.group("dt").replace("T", " "), "%Y-%m-%d %H:%M:%S") + CLOCK_SHIFT).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


@_clock(r"\b(?P<dt>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)")
def _slashed(m: re.Match[str]) -> str:
    return (datetime.strptime(m.group("dt"), "%Y/%m/%d %H:%M:%S") + CLOCK_SHIFT).strftime("%Y/%m/%d %H:%M:%S")


@_clock(r"\b(?P<wd>Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<dt>\d\d (?:" + "|".join(_MONTHS) + r") \d{4} \d\d:\d\d:\d\d)")
def _rfc1123(m: re.Match[str]) -> str:
    t = datetime.strptime(m.group("dt"), "%d %b %Y %H:%M:%S") + CLOCK_SHIFT
    return f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year} {t:%H:%M:%S}"


@_clock(r"\b(?P<wd>Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<dt>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
def _systemd(m: re.Match[str]) -> str:
    t = datetime.strptime(m.group("dt"), "%Y-%m-%d %H:%M:%S") + CLOCK_SHIFT
    return f"{_DAYS[t.weekday()]} {t:%Y-%m-%d %H:%M:%S}"


@_clock(r"^(?P<mon>" + "|".join(_MONTHS) + r") (?P<day>[ \d]\d) (?P<time>\d\d:\d\d:\d\d)")
def _syslog(m: re.Match[str]) -> str:
    t = datetime(2025, _MONTHS.index(m.group("mon")) + 1, int(m.group("day")),
                 *map(int, m.group("time").split(":"))) + CLOCK_SHIFT
    return f"{_MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S}"


@_clock(r"(?<![\w])(?P<lvl>[IWEF])(?P<md>\d{4}) (?P<time>\d\d:\d\d:\d\d)(?=\.\d+)")
def _klog(m: re.Match[str]) -> str:
    md = m.group("md")
    t = datetime(2025, int(md[:2]), int(md[2:]), *map(int, m.group("time").split(":"))) + CLOCK_SHIFT
    return f"{m.group('lvl')}{t:%m%d %H:%M:%S}"


def shift_clock(s: str) -> str:
    if not any(ch.isdigit() for ch in s):
        return s
    for pattern, fn in _CLOCKS:
        if pattern.pattern.startswith("^"):  # at the start of a line (a journal), not anywhere
            s = "\n".join(pattern.sub(fn, ln) for ln in s.split("\n"))
        else:
            s = pattern.sub(fn, s)
    return s


def _shift_metrics(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    for row in rows[1:]:
        if row and re.fullmatch(r"\d+(?:\.\d+)?", row[0]):
            row[0] = f"{float(row[0]) + CLOCK_SHIFT.total_seconds():.0f}" if "." not in row[0] else str(float(row[0]) + CLOCK_SHIFT.total_seconds())
        elif row:
            row[0] = shift_clock(row[0])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def shift(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cache = dict(files["tool_cache.json"])
    stamp = cache.get("collection_timestamp")
    cell: CellFn = lambda c, s: shift_clock(_age_cell(c, s))  # noqa: E731
    out = dict(files)
    new = transform_cache({k: v for k, v in cache.items() if k != "collection_timestamp"}, shift_clock, cell, None)
    if isinstance(stamp, str):
        try:
            new = {"collection_timestamp": (datetime.fromisoformat(stamp) + CLOCK_SHIFT + AGE_SHIFT).isoformat(), **new}
        except ValueError:
            new = {"collection_timestamp": stamp, **new}
    out["tool_cache.json"] = new
    for name in ("raw_data/logs.json", "raw_data/alert.json"):
        if name in files:
            out[name] = _walk(files[name], shift_clock)
    if "raw_data/metrics.csv" in files:
        out["raw_data/metrics.csv"] = _shift_metrics(files["raw_data/metrics.csv"])
    return out, {}


def perturb(src: Path, dst: Path, rel: str, kind: str) -> dict[str, Any]:
    """Write `kind`'s copy of the case at `src` into `dst`; what was done (for the report)."""
    files = read_case(src)
    if kind in ("rename", "rename-opaque"):
        out, info = rename(files, rel, opaque=kind == "rename-opaque")
    elif kind == "reorder":
        out, info = reorder(files, rel)
    elif kind == "drop":
        out, info = drop(files, rel)
    elif kind == "shift":
        out, info = shift(files, rel)
    else:
        raise ValueError(f"unknown perturbation {kind}")
    write_case(dst, out)
    return info
