"""Smoke runs of every benchmark in `bench/run.py` at tiny sizes, so the scripts keep working between `make bench`
runs: each must exit 0 and write its JSON with the expected figures (numbers where numbers belong) and with the
correctness checks it makes itself holding (nothing lost in the storm, every unhealthy pod found, every drill
milestone observed, ...). Timing values are never asserted; the figures go to BENCHMARKS.md from `make bench`.
Results are written to pytest's tmp dir, never to bench/results/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
# Generous: a smoke run takes 10-60 s on an idle 2-core machine, several times that under a shared machine's load.
RUN_TIMEOUT_S = 900


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value >= 0


def check_postmortem_assembly(data: dict[str, Any]) -> None:
    assert data["artifacts"] >= 20, data["artifacts"]  # every artifact published was stored and read back
    assert data["repeats"] == len(data["rounds"]) == 1
    for key in ("total_s", "assemble_s", "render_s"):
        assert data[key]["n"] == 1 and number(data[key]["median"]), (key, data[key])
    assert data["markdown_chars"] > 0 and data["html_chars"] > 0


def check_fanout(data: dict[str, Any]) -> None:
    [size] = data["sizes"]
    assert size["pods"] == 100
    assert size["errors"] == [], size["errors"]
    assert size["correct"] is True  # found exactly the 50 unhealthy pods and 50 previous logs with the fatal line
    [r] = size["rounds"]
    assert r["unhealthy"] == r["logs"] == r["logs_with_fatal_line"] == size["unhealthy_expected"]
    for key in ("total_s", "identify_s", "logs_s", "total_cpu_s", "peak_rss_mb"):
        assert number(r[key]), (key, r[key])


def check_overhead(data: dict[str, Any]) -> None:
    [row] = data["rounds"]
    for who in ("script", "runbook"):
        assert number(row[who]["wall_s"]) and number(row[who]["cpu_s"]), row[who]
    for who in ("deployment", "submit"):
        assert number(row[who]["wall_s"]) and number(row[who]["to_recovered_s"]), row[who]
    assert number(data["submit_ratio_to_recovered_median"])
    assert row["script"]["steps_s"], "the manual script timed no step"
    assert number(row["runbook"]["to_recovered_s"]), "the runbook never noted the workload recovered"
    assert number(data["script_s_median"]) and number(data["runbook_s_median"])


def check_storm(data: dict[str, Any]) -> None:
    f, c = data["figures"], data["checks"]
    assert c["problems"] == [], c["problems"]
    assert f["lost"] == 0 and f["accepted"] == f["notifications"] == 300
    assert f["duplicate_runs"] == 0
    assert f["runs_that_can_start"] == f["runs_expected"] == c["runs_that_can_start"]
    for key in ("accepted_per_second", "storm_seconds", "receiver_cpu_ms_per_alert"):
        assert number(f[key]), (key, f[key])
    assert all(number(f["ack_ms"][k]) for k in ("p50", "p99"))


def check_alert_to_running(data: dict[str, Any]) -> None:
    v = data["variants"]["warm-nudge"]
    assert v["errors"] == [], v["errors"]
    assert v["alerts"] == v["measured"] == 2
    assert all(number(v[k]) for k in ("p50_s", "p99_s", "max_s"))
    assert set(v["stages_p50_s"]) == {"accept_to_created", "created_to_pending", "pending_to_running"}
    for s in v["samples"]:
        assert s["sent"] <= s["acked"] and s["created"] and s["pending"] and s["running"]


def check_drill_mttd(data: dict[str, Any]) -> None:
    settings = data["detection_settings"]
    assert settings["scrape_interval"] and settings["evaluation_interval"]
    assert settings["rules"]["PodCrashLooping"]["for_s"] is not None
    [r] = data["rounds"]["crash"]
    assert r["ok"] and r["errors"] == [], r["errors"]
    assert r["run"]["approval"] == "dry-run" and r["run"]["route"] == "mttd-crash"
    m = r["milestones_s"]
    stages = ["crash_observed", "restart_scraped", "prometheus_firing", "alertmanager", "receiver_accepted",
              "run_created", "run_pending", "run_running"]
    assert all(number(m[s]) for s in stages), m
    # Causal order on one clock (the Prefect server's): created, claimed, started.
    assert m["run_created"] <= m["run_pending"] <= m["run_running"]
    summary = data["summary"]["crash"]
    assert summary["rounds_ok"] == summary["rounds"] == 1
    assert set(summary["from_fault_s"]) == set(stages)


def check_memory(data: dict[str, Any]) -> None:
    c = data["checks"]
    assert c["problems"] == [], c["problems"]
    assert c["lost"] == 0 and c["runs_in_prefect"] == c["runs_expected"] == 4  # 2 storms x 2 fingerprints
    assert c["notifications"] == 600
    soak = data["soak_rss_after_each_storm_mb"]
    assert all(len(v) == 2 and all(number(x) and x > 0 for x in v) for k, v in soak.items() if k != "Pushgateway"), soak
    assert set(c["run_states"]) <= {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, c["run_states"]
    for name in ("receiver", "runner", "fork server", "sandbox API server", "Prefect server", "Prometheus"):
        p = data["processes_mb"][name]
        for phase in ("rest", "peak", "after"):
            assert p[phase] and number(p[phase]["rss"]) and p[phase]["rss"] > 0, (name, phase, p)
    assert data["forked_runs"]["runs_seen"] >= 1, "no forked run was ever sampled"


def check_diagnosis(data: dict[str, Any]) -> None:
    # --quick: the 49 pinned cases of the repository, so this runs where ../shared is not (CI).
    assert "skipped" not in data, data.get("skipped")
    f = data["figures"]
    assert data["cases"] == 49 and len(data["per_label"]) == 49 and len(data["per_category"]) == 7
    assert f["unreadable_cases"] == 0 and not f["traceback"], data["unreadable"]
    assert f["deterministic"] is True, data["differing_cases"]
    assert f["network_guard_armed"] is True and f["network_attempts"] == 0, data["network_attempts"]
    assert f["guardrail_violations"] == 0, data["guardrail_violations"]
    assert data["cli_summary_agrees"] is True, (data["cli_summary"], f)  # the product's scoring = the bench's
    for key in ("a1", "a3", "object", "median_ms", "p95_ms", "total_s", "peak_rss_mb"):
        assert number(f[key]), (key, f[key])
    assert set(data["targets"]) >= {"a1 >= 0.85", "median <= 50 ms", "deterministic", "no network"}


def check_diagnosis_robustness(data: dict[str, Any]) -> None:
    assert "skipped" not in data, data.get("skipped")
    assert data["cases"] == 49 and not data["none"]["unreadable"]
    kinds = [r["kind"] for r in data["perturbations"]]
    assert kinds == ["rename", "rename-opaque", "reorder", "drop", "truncate", "symptom", "shift"], kinds
    for r in data["perturbations"]:
        # A perturbed case may be diagnosed worse, never crash the CLI, go unread or reach the network.
        assert r["cases"] == 49 and not r["unreadable"] and not r["traceback"] and not r["error_lines"], r
        assert r["network_attempts"] == 0 and r["guardrail_violations"] == 0, r
        assert all(number(r[k]) for k in ("a1", "a3", "object")), r
        if r["kind"].startswith("rename"):
            assert r["leftover_old_names"] == 0, r  # the renaming reached every mention of every name
        if r["kind"] == "drop":
            assert sum(v["cases"] for v in r["dropped"].values()) == 49, r["dropped"]


def check_families(data: dict[str, Any]) -> None:
    """One round of the missing-secret family drill through the alert path: detected, diagnosed right, escalated."""
    row = data["table"]["missing-secret"]
    assert row["runs"] == 1 and row["passed"] == 1, row["failures"]
    for key in ("detect_s", "diagnose_s", "escalate_s"):
        assert number(row[key]), (key, row)
    assert "| `missing-secret` | KubeContainerWaiting | `secret-missing` | escalate |" in data["markdown"]


def check_live_diagnosis(data: dict[str, Any]) -> None:
    cli, inproc, alerts = data["cli"], data["inproc"], data["alert_to_causes"]["summary"]
    # The command and the in-process path see the sandbox's crash fault as what it is.
    assert cli["top_causes"][0] == "crash-after-rollout Deployment/checkout", cli["top_causes"]
    assert inproc["top_causes"] == ["crash-after-rollout Deployment/checkout"], inproc["top_causes"]
    for key in ("wall_s", "cpu_s", "help_s"):
        assert cli[key]["n"] >= 1 and number(cli[key]["median"]) and number(cli[key]["p95"]), (key, cli[key])
    assert number(inproc["total_s"]["median"]) and number(inproc["diagnose_ms"]["median"])
    # One collection lists each kind once and reads some logs: the audit saw exactly those requests.
    requests = inproc["api_requests"]["by_kind"]
    lists = {r["resource"] for r in requests if r["verb"] == "list"}
    assert {"pods", "deployments", "events", "nodes", "replicasets", "services"} <= lists, lists
    assert all(r["count"] == 1 for r in requests if r["verb"] == "list"), requests
    assert any(r["resource"] == "pods/log" for r in requests), requests
    assert alerts["errors"] == [] and alerts["alerts"] == alerts["complete"] == 2, alerts
    stages = alerts["from_alert_median_s"]
    assert all(number(v) for v in stages.values()), stages
    # Causal order on one clock: the run exists before it runs, and the causes are published after diagnosing.
    assert stages["run_created"] <= stages["run_running"] <= stages["collect_start"] <= stages["diagnose_end"]
    assert number(alerts["alert_to_causes_s"]["p95"]) and number(alerts["alert_to_running_s"]["median"])


# name → (arguments for a tiny run, checks of its JSON)
SMOKE: dict[str, tuple[list[str], Callable[[dict[str, Any]], None]]] = {
    "diagnosis": (["--quick"], check_diagnosis),
    "postmortem_assembly": (["--artifacts", "30", "--repeats", "1"], check_postmortem_assembly),
    "fanout": (["--sizes", "100", "--rounds", "1"], check_fanout),
    # CI runs this beside another pytest worker: give the bad revision's pods time to be seen Ready before they crash.
    "overhead": (["--rounds", "1", "--crash-after", "5", "--prepare-timeout", "300"], check_overhead),
    "storm": (["--notifications", "300", "--fingerprints", "10"], check_storm),
    "alert_to_running": (["--variants", "warm-nudge", "--alerts", "2"], check_alert_to_running),
    "drill_mttd": (["--rounds", "1", "--faults", "crash"], check_drill_mttd),
    "memory": (["--notifications", "300", "--fingerprints", "2", "--rest", "1", "--storms", "2"], check_memory),
    "families": (["--rounds", "1", "--families", "missing-secret"], check_families),
    "live_diagnosis": (["--cli-runs", "1", "--inproc-runs", "2", "--alerts", "2"], check_live_diagnosis),
    "diagnosis_robustness": (["--quick"], check_diagnosis_robustness),
}


def registered_benches() -> list[str]:
    """BENCHES and OPTIONAL of bench/run.py, read from its source (importing it would need bench/ on sys.path)."""
    source = (BENCH / "run.py").read_text()
    names = []
    for var in ("BENCHES", "OPTIONAL"):
        match = re.search(rf"^{var} = (\[.*?\])", source, re.M | re.S)
        assert match, f"bench/run.py has no {var} list"
        names += json.loads(match.group(1))
    return names


def test_every_bench_has_a_smoke_run() -> None:
    assert sorted(registered_benches()) == sorted(SMOKE)
    assert all((BENCH / f"{name}.py").exists() for name in SMOKE)


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("name", list(SMOKE))
def test_bench_smoke(name: str, tmp_path: Path) -> None:
    args, check = SMOKE[name]
    out = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "K8S_RUNBOOKS_")) and k != "KUBECONFIG"}
    env["K8S_RUNBOOKS_SANDBOX_TOOLS_DIR"] = os.environ.get("K8S_RUNBOOKS_SANDBOX_TOOLS_DIR",
                                                           str(REPO / ".sandbox" / "tools" / "bin"))
    result = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--out", str(out), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert isinstance(data["machine"]["cpus"], int)
    check(data)
