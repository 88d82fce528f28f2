"""The Cloud-OpsBench importer and batch runner on damaged input, through the real console script as a user runs
it (`k8s-runbooks diagnose --cloud-opsbench DIR --output FILE.jsonl`): every damaged case is one clear error
line on stderr and one error record, the other cases are still diagnosed, the exit code is 0 and no traceback
is printed. Bad command lines are one error line and exit code 1 (2 for usage errors). The batch is
deterministic across processes (other hash seeds) and never touches the network.

The cases are copies of the pinned dev cases (`tests/fixtures/cloud-opsbench.tar.xz`), damaged in tmp_path.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from k8s_runbooks.diagnosis.engine import diagnose
from k8s_runbooks.diagnosis.sources.cloud_opsbench import build_evidence, load_case
from tests.helpers.cloud_opsbench import console_script, copy_case, no_network_env, pinned_answers, unpack

RUN_TIMEOUT_S = 300
# Two pinned cases the damaged copies are made from (and that must still be diagnosed beside them).
BASE = "boutique/admission/1"
OTHER = "boutique/runtime/1"


@pytest.fixture(scope="module")
def pinned_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(tmp_path_factory.mktemp("opsbench"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), "diagnose", *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, env=env)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cache(case: Path) -> dict[str, Any]:
    return json.loads((case / "tool_cache.json").read_text(encoding="utf-8"))


def _write_cache(case: Path, cache: dict[str, Any]) -> None:
    (case / "tool_cache.json").write_text(json.dumps(cache), encoding="utf-8")


def damaged_tree(root: Path, dest: Path) -> dict[str, str]:
    """Good and damaged case folders under `dest`; returns name -> the reason the error line must give
    ('' for a case that must still be diagnosed)."""
    rng = random.Random(13)
    expected: dict[str, str] = {}

    def case(name: str, src: str = BASE) -> Path:
        return copy_case(root, src, dest / name)

    case("a-good")
    expected["a-good"] = ""
    (case("b-no-metadata") / "metadata.json").unlink()
    expected["b-no-metadata"] = "metadata.json is missing"
    (case("c-no-tool-cache") / "tool_cache.json").unlink()
    expected["c-no-tool-cache"] = "tool_cache.json is missing"
    d = case("d-truncated")
    text = (d / "tool_cache.json").read_text(encoding="utf-8")
    (d / "tool_cache.json").write_text(text[: len(text) // 2], encoding="utf-8")
    expected["d-truncated"] = "tool_cache.json is not valid JSON"
    (case("e-cache-not-object") / "tool_cache.json").write_text('["GetResources", "pods"]', encoding="utf-8")
    expected["e-cache-not-object"] = "tool_cache.json is not an object"
    f = case("f-no-namespace")
    meta = json.loads((f / "metadata.json").read_text())
    del meta["namespace"]
    (f / "metadata.json").write_text(json.dumps(meta))
    expected["f-no-namespace"] = "metadata.json has no namespace"
    # Every tool output replaced by text that is no kubectl output at all.
    g = case("g-garbage-text")
    _write_cache(g, {k: ("%%% }{ not a table ][\nNAME   READY\n@@@ ~~~ ###\n" if isinstance(v, str) else v)
                     for k, v in _cache(g).items()})
    expected["g-garbage-text"] = ""
    # Binary bytes: in every tool output (valid JSON strings of random bytes) and as the whole raw logs file.
    h = case("h-binary-bytes")
    _write_cache(h, {k: (rng.randbytes(3000).decode("latin-1") if isinstance(v, str) else v) for k, v in _cache(h).items()})
    (h / "raw_data" / "logs.json").write_bytes(rng.randbytes(20000))
    expected["h-binary-bytes"] = ""
    # An enormous line (8 MB without a newline) in a pod's describe and in an error log.
    i = case("i-enormous-line")
    cache = _cache(i)
    for prefix in ('DescribeResource:{"resource_type":"pods"', "GetErrorLogs:"):
        key = next(k for k in cache if k.startswith(prefix))
        cache[key] = str(cache[key]) + "x" * 8_000_000
    _write_cache(i, cache)
    expected["i-enormous-line"] = ""
    # An empty folder tree beside the cases: not a case, no line.
    (dest / "j-empty" / "k" / "l").mkdir(parents=True)
    case("z-good", OTHER)
    expected["z-good"] = ""
    return expected


def test_damaged_cases_are_one_error_line_each_and_the_batch_goes_on(pinned_root: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    expected = damaged_tree(pinned_root, cases)
    out = tmp_path / "out.jsonl"
    result = run_cli("--cloud-opsbench", str(cases), "--output", str(out),
                     env=no_network_env(tmp_path / "network.log"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    records = {r["case"]: r for r in read_jsonl(out)}
    assert set(records) == set(expected), sorted(records)  # the empty folder tree is not a case
    lines = result.stderr.splitlines()
    answers = pinned_answers()
    for name, reason in expected.items():
        mine = [ln for ln in lines if f" {name}: " in ln]
        assert len(mine) == 1, (name, mine)
        if reason:
            assert f"{name}: error: {reason}" in mine[0], mine[0]
            assert records[name] == {"case": name, "error": records[name]["error"]} and reason in records[name]["error"]
        else:
            assert ": error:" not in mine[0] and "error" not in records[name], (mine[0], records[name].get("error"))
    # The good copies (and the copy with an enormous line) are diagnosed as recorded.
    for name, src in (("a-good", BASE), ("z-good", OTHER), ("i-enormous-line", BASE)):
        assert records[name]["root_causes"][:1] == [answers[src]["root_cause"]], (name, records[name]["root_causes"])
        assert records[name]["fault_object"] == answers[src]["fault_object"], name
    # Text that is no kubectl output gives no cause rather than a guess dressed as one.
    for name in ("g-garbage-text", "h-binary-bytes"):
        assert records[name]["root_causes"] == [] and records[name]["fault_object"] is None, (name, records[name])
        assert f"{name}: no signature matched" in result.stderr
    assert f"{len(expected)} cases, 5 unreadable" in result.stderr
    assert not (tmp_path / "network.log").exists()


def test_an_empty_folder_tree_is_reported_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "cases" / "boutique" / "runtime").mkdir(parents=True)
    out = tmp_path / "out.jsonl"
    result = run_cli("--cloud-opsbench", str(tmp_path / "cases"), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "no case folders" in result.stderr and "Traceback" not in result.stderr
    assert out.read_text() == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--cloud-opsbench", "{cases}"], "--cloud-opsbench needs --output FILE.jsonl"),
    (["--cloud-opsbench", "{file}", "--output", "{out}"], "is not a folder"),
    (["--cloud-opsbench", "{tmp}/nowhere", "--output", "{out}"], "is not a folder"),
    (["--cloud-opsbench", "{cases}", "--output", "{out}", "--answers", "{tmp}"], "cannot read answers"),
    (["--cloud-opsbench", "{cases}", "--output", "{out}", "--answers", "{tmp}/missing.jsonl"], "cannot read answers"),
    (["--cloud-opsbench", "{cases}", "--output", "{out}", "--answers", "{file}"], "not an answer line"),
    (["--cloud-opsbench", "{cases}", "--output", "{tmp}"], "cannot write"),
    (["--cloud-opsbench", "{cases}", "--snapshot", "{file}", "--output", "{out}"], "give exactly one of"),
    (["--cloud-opsbench", "{cases}", "--namespace", "shop", "--output", "{out}"], "give exactly one of"),
    ([], "give exactly one of"),
], ids=["no-output", "file-not-folder", "missing-folder", "answers-is-a-folder", "answers-missing", "answers-garbage",
        "output-is-a-folder", "cloud-opsbench-and-snapshot", "cloud-opsbench-and-namespace", "no-mode"])
def test_bad_command_lines_are_one_error_line(args: list[str], message: str, pinned_root: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    copy_case(pinned_root, BASE, cases / "one")
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(b"\x00\xff not json lines \x81\n{]\n")
    values = {"cases": str(cases), "file": str(garbage), "out": str(tmp_path / "out.jsonl"), "tmp": str(tmp_path)}
    result = run_cli(*[a.format(**values) for a in args])
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def _strip_ms(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "ms"} for r in records]


def test_batch_is_deterministic_across_processes_and_never_opens_a_socket(pinned_root: Path, tmp_path: Path) -> None:
    outputs = []
    for seed in ("1", "2"):
        log = tmp_path / f"network-{seed}.log"
        env = no_network_env(log)
        env["PYTHONHASHSEED"] = seed  # set iteration order differs between the two processes
        out = tmp_path / f"out-{seed}.jsonl"
        result = run_cli("--cloud-opsbench", str(pinned_root), "--output", str(out), env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert Path(f"{log}.armed").exists(), "the network guard was not loaded: this run proves nothing"
        assert not log.exists(), log.read_text()
        records = read_jsonl(out)
        assert len(records) == len(pinned_answers()) and not [r for r in records if "error" in r]
        outputs.append(_strip_ms(records))
    assert outputs[0] == outputs[1]


def test_the_network_guard_catches_a_connection(tmp_path: Path) -> None:
    """The guard the test above relies on does fire (a check that cannot fail would prove nothing)."""
    log = tmp_path / "network.log"
    # Loopback only: were the guard broken, nothing would leave the machine.
    probe = ("import socket\n"
             "for attempt in (lambda: socket.socket().connect(('127.0.0.1', 9)), lambda: socket.getaddrinfo('localhost', 9)):\n"
             "    try:\n        attempt()\n    except OSError as e:\n        print(e)\n")
    result = subprocess.run([str(Path(console_script()).parent / "python"), "-c", probe], capture_output=True, text=True,
                            env=no_network_env(log), timeout=60)
    assert result.stdout.count("network access blocked") == 2, result
    logged = log.read_text()
    assert "socket.connect (('127.0.0.1', 9),)" in logged and "socket.getaddrinfo ('localhost', 9" in logged, logged


def test_same_evidence_gives_identical_hypotheses(pinned_root: Path) -> None:
    for rel in sorted(pinned_answers())[::7]:
        first, second = load_case(pinned_root / rel), load_case(pinned_root / rel)
        assert first.evidence == second.evidence, rel
        runs = [diagnose(first.evidence, first.symptom) for _ in range(2)] + [diagnose(second.evidence, second.symptom)]
        dumps = [d.model_dump(exclude={"elapsed_ms"}) for d in runs]
        assert dumps[0]["hypotheses"], rel
        assert dumps[0] == dumps[1] == dumps[2], rel


def test_importer_never_reads_the_answer_key(pinned_root: Path, tmp_path: Path) -> None:
    """metadata.json without `result` and `process` diagnoses exactly as with them."""
    for rel in sorted(pinned_answers())[::12]:
        case = copy_case(pinned_root, rel, tmp_path / rel.replace("/", "-"))
        meta = json.loads((case / "metadata.json").read_text())
        (case / "metadata.json").write_text(json.dumps({k: meta[k] for k in ("namespace", "query")}))
        with_key = diagnose(load_case(pinned_root / rel).evidence, meta["query"]).model_dump(exclude={"elapsed_ms"})
        without = load_case(case)
        assert without.symptom == meta["query"]
        assert diagnose(without.evidence, without.symptom).model_dump(exclude={"elapsed_ms"}) == with_key, rel



NS = "boutique"
EVENTS_KEY = 'GetResources:{"resource_type":"events","name":"","namespace":"boutique"}'
EVENT_LINES = ("2m17s       Normal    Started              pod/currencyservice-5bc9dbdf66-trn2t          Started container server\n"
               "4s          Warning   ProvisioningFailed   persistentvolumeclaim/redis-cart-pvc          "
               'storageclass.storage.k8s.io "fast-sdd" not found\n')
EVENT_HEADER = "LAST SEEN   TYPE      REASON               OBJECT                                        MESSAGE\n"


@pytest.mark.parametrize("text", [EVENT_HEADER + EVENT_LINES, EVENT_LINES], ids=["with-header", "header-cut-off"])
def test_events_list_is_read_with_or_without_its_header(text: str) -> None:
    """Recorders keep the last lines of a long events table: a third of the dev set's event lists lost their header."""
    evidence = build_evidence({EVENTS_KEY: text}, NS)
    got = [(e.type, e.reason, e.object.kind, e.object.name, e.message, e.age_seconds) for e in evidence.events]
    assert got == [("Normal", "Started", "Pod", "currencyservice-5bc9dbdf66-trn2t", "Started container server", 137),
                   ("Warning", "ProvisioningFailed", "PersistentVolumeClaim", "redis-cart-pvc",
                    'storageclass.storage.k8s.io "fast-sdd" not found', 4)]


@pytest.mark.parametrize("kind", ["pods", "nodes", "services", "endpoints", "persistentvolumeclaims"])
def test_a_describe_that_found_nothing_adds_no_object(kind: str) -> None:
    key = f'DescribeResource:{{"resource_type":"{kind}","name":"web","namespace":"{NS}"}}'
    evidence = build_evidence({key: f'Error from server (NotFound): {kind} "web" not found\n'}, NS)
    objects = evidence.pods + evidence.nodes + evidence.services + evidence.endpoints + evidence.pvcs
    assert objects == [], objects
    assert any("no Name" in n for n in evidence.notes), evidence.notes


ODD_VALUES: list[Any] = [
    123, None, ["a", 1, {"b": 2}], {"x": 1}, "", "%%% }{\nNAME   READY\nfoo\n",
    {"nodes": [{"name": "n1", "labels": [1], "taints": "x", "conditions": [1], "allocatable_resources": "big"}], "alerts": "x"},
    "kind: Ingress\nmetadata: {name: i}\nspec: {rules: 7}\n---\nkind: Deployment\nmetadata: {name: y}\n"
    "spec: {replicas: 'a', template: {spec: {containers: [1, {name: 3, ports: 'p', env: 4}], volumes: 'v', affinity: 3}}}\n",
]


def test_odd_tool_values_never_sink_a_case(pinned_root: Path) -> None:
    """Each tool of a real case, in turn, returns a value of the wrong shape: the case is still diagnosed."""
    cache = _cache(pinned_root / BASE)
    families: dict[tuple[str, str], str] = {}
    for key in cache:
        tool, _, raw = key.partition(":")
        families.setdefault((tool, json.loads(raw).get("resource_type", "") if raw else ""), key)
    for (tool, kind), key in families.items():
        for value in ODD_VALUES:
            evidence = build_evidence({**cache, key: value}, NS)
            assert diagnose(evidence, "").namespace == NS, (tool, kind, value)
