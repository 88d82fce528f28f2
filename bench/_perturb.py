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
- `truncate`: shorter logs: each log cut to its last TAIL_LINES lines, each error-log summary to its first patterns.
- `symptom`: the symptom (metadata.json's `query`) replaced by words that name no layer ("Incident reported.").
- `shift`: the snapshot taken later: every age (AGE, LAST SEEN, `(97s ago)`, an event's `3m (x5 over 10m)`) grows
  by AGE_SHIFT, and absolute timestamps (logs, describe, systemd journals, alerts, metrics) move by CLOCK_SHIFT.

Tables are re-aligned as kubectl's tabwriter does (a longer name widens its column), so the text stays what kubectl
would print. Deterministic: the random choices are seeded by the case's relative path.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

from _perturb_clock import shift
from _perturb_text import case_rng, cells, columns, is_get_table, read_case, transform_cache, trie_pattern, walk, write_case

KINDS = ("rename", "rename-opaque", "reorder", "drop", "truncate", "symptom", "shift")
TAIL_LINES = 30  # `truncate`: what `kubectl logs --tail=30` would have kept
ERROR_PATTERNS = 2  # `truncate`: the error-log summary's first patterns kept
NEUTRAL_SYMPTOM = "Incident reported."

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
# Generated suffixes use apimachinery's rand.SafeEncodeString alphabet (no vowels, no 0/1/3): `-84dbdf99d-96ddw`
# (ReplicaSet hash, pod), `-5rpds` (DaemonSet or Job pod). 'cpu-consumer-5rpds' is DaemonSet 'cpu-consumer'.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_HASHED = re.compile(rf"^(?P<base>.+?)(?:-(?=[a-z0-9]*\d)[a-z0-9]{{6,10}})?-{_SAFE}{{5}}$|^(?P<rs>.+)-(?=[a-z0-9]*\d)[a-z0-9]{{6,10}}$")
# Words of kubectl's and the kubelet's own text, never renamed even when an object carries them as its name:
# the node components CheckNodeServiceStatus names, resource names ('Insufficient cpu').
_RESERVED = {"kubelet", "containerd", "docker", "kube-proxy", "kube-scheduler", "kube-apiserver", "etcd", "cpu", "memory",
             "pods", "storage", "ephemeral-storage", "services", "nodes", "master", "control-plane"}
_ORDINAL = re.compile(r"^(?P<base>.+)-\d+$")


def _table_names(text: str) -> list[str]:
    if not isinstance(text, str) or not text.strip() or not is_get_table(text):
        return []
    lines = [ln for ln in text.split("\n") if ln.strip()]
    names, starts = columns(lines[0])
    if "NAME" not in names:
        return []
    i = names.index("NAME")
    return [c for c in (cells(ln, starts)[i] for ln in lines[1:]) if c]


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
                names.add((m.group("base") or m.groupdict().get("rs") or n) if m else n)
        for field in ("app_name", "service_name"):
            if tool == "CheckNodeServiceStatus":
                continue  # its service_name is a node component (kubelet, containerd), not an object of the case
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
    names = {n for n in names if len(n) >= 3 and n not in _SKIP and n not in _RESERVED and not n.startswith(("istio-", "sh.helm.", "kube-"))
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
    out = {"metadata.json": walk(files["metadata.json"], r.text),
           "tool_cache.json": transform_cache(files["tool_cache.json"], r.text, r.cell, None)}
    for name in ("raw_data/logs.json", "raw_data/alert.json"):
        if name in files:
            out[name] = walk(files[name], r.text)
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


def truncate(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shorter logs: each recorded log cut to its last TAIL_LINES lines (they are in time order), each error-log
    summary to its first ERROR_PATTERNS patterns."""
    out = dict(files)
    logs = files.get("raw_data/logs.json")
    cut = 0
    if isinstance(logs, dict):
        out["raw_data/logs.json"] = {k: v[-TAIL_LINES:] if isinstance(v, list) else v for k, v in logs.items()}
        cut += sum(1 for v in logs.values() if isinstance(v, list) and len(v) > TAIL_LINES)
    cache = dict(files["tool_cache.json"])
    for key, value in cache.items():
        if not key.startswith("GetErrorLogs:") or not isinstance(value, str) or not value.lstrip().startswith("{"):
            continue
        try:
            summary = json.loads(value)
        except ValueError:
            continue
        if isinstance(summary, dict) and isinstance(summary.get("patterns"), list) and len(summary["patterns"]) > ERROR_PATTERNS:
            summary["patterns"] = summary["patterns"][:ERROR_PATTERNS]
            cache[key] = json.dumps(summary, indent=2, ensure_ascii=False)
            cut += 1
    out["tool_cache.json"] = cache
    return out, {"cut": cut}


def symptom(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The symptom in words that name no layer: what the engine concludes from the evidence alone."""
    out = dict(files)
    out["metadata.json"] = {**files["metadata.json"], "query": NEUTRAL_SYMPTOM}
    return out, {"query": files["metadata.json"].get("query")}


def perturb(src: Path, dst: Path, rel: str, kind: str) -> dict[str, Any]:
    """Write `kind`'s copy of the case at `src` into `dst`; what was done (for the report)."""
    files = read_case(src)
    if kind in ("rename", "rename-opaque"):
        out, info = rename(files, rel, opaque=kind == "rename-opaque")
    elif kind == "reorder":
        out, info = reorder(files, rel)
    elif kind == "drop":
        out, info = drop(files, rel)
    elif kind == "truncate":
        out, info = truncate(files, rel)
    elif kind == "symptom":
        out, info = symptom(files, rel)
    elif kind == "shift":
        out, info = shift(files, rel)
    else:
        raise ValueError(f"unknown perturbation {kind}")
    write_case(dst, out)
    return info
