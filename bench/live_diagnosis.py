"""Live diagnosis on the sandbox (issue 13's live targets): `k8s-runbooks diagnose` wall time, and alert → ranked
causes on the run page.

    .venv/bin/python bench/live_diagnosis.py [--quick] [--out FILE] [--cli-runs 10] [--inproc-runs 20] [--alerts 20]

Starts `k8s-runbooks sandbox up --no-demo` on free ports (cluster, Prometheus, Alertmanager, Prefect server, warm
runner, receiver) with receiver routes of its own, creates the demo workload (`shop`: checkout x3, payments x2)
and makes `checkout` crash (`sandbox fault crash`: a rollout whose pods exit after 2 s), so there is an incident
to diagnose. Then:

1. **CLI**: `k8s-runbooks diagnose -n shop -s checkout` as a user types it, a new process each time (cold:
   interpreter, imports, kubeconfig, collection, engine, table), `--cli-runs` times; wall time median/p95. Also
   `k8s-runbooks --help` (the start-up floor) and the time the command itself reports for collect + diagnose.
2. **In process**: `live.collect` + `engine.diagnose` `--inproc-runs` times in this process (warm client), with
   each collection phase timed from its progress messages; the API requests one collection makes, counted by
   the sandbox API server's request audit (diffed around it; nothing else talks to the API in that window).
3. **Alert → causes artifact**: `--alerts` Alertmanager webhooks POSTed to the receiver, one at a time, each a
   new fingerprint (`BenchLiveDiagnosis`, routed to pod-crash on shop/checkout in dry-run). The next alert is
   sent once the previous run is final: runs of one workload share its remediation slot, so alerts sent sooner
   would queue behind each other (what a storm of alerts for *one* workload does; not measured here). Per
   alert, on one clock: sent (client, before the POST) → accepted (spool row) → run created → PENDING →
   RUNNING → slot held (flow log) → collect-evidence start/end (task run) → diagnose-evidence end → causes
   artifact created (server) → diagnosis markdown and snapshot artifacts created.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

import _harness as h

NS, DEPLOY = "shop", "checkout"
CAUSES_KEY, DIAGNOSIS_KEY, SNAPSHOT_KEY = "pod-crash-identify-causes", "pod-crash-identify-diagnosis", "pod-crash-snapshot"
ALERTNAME = "BenchLiveDiagnosis"
ROUTES = f"""version: 1
routes:
  - name: bench-live-diagnosis
    sources: [alertmanager]
    match: {{alertname: {ALERTNAME}}}
    deployment: pod-crash/pod-crash
    approval: dry-run
    parameters:
      params: {{namespace: "{{labels.namespace}}", deployment: "{{labels.deployment}}", approval: "{{approval}}",
               verify_timeout_seconds: 0, notes: "bench live_diagnosis {{fingerprint}}"}}
"""
HTTP_TIMEOUT_S = 10.0
# Milestones of one alert, in causal order (seconds after the POST was sent).
MILESTONES = ["accepted", "run_created", "run_pending", "run_running", "slot_held", "collect_start", "collect_end",
              "diagnose_end", "causes_artifact", "diagnosis_artifact", "snapshot_artifact"]


class BenchError(Exception):
    pass


def epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def phase_of(message: str) -> str:
    """Which collection phase a progress message of `live.collect` closes."""
    for needle, phase in (("evidence collected", "finish"), ("Prometheus", "metrics"), ("log excerpts", "logs"),
                          ("workloads", "objects"), (" pods", "pods")):
        if needle in message:
            return phase
    return "other"


# ------------------------------------------------------------------------------------ 1-2. the diagnose command
def prepare_incident(box: h.Sandbox) -> None:
    from kubernetes import client

    from k8s_runbooks.sandbox import demo_workload

    demo_workload.ensure_demo_workload(box.kubeconfig)
    demo_workload.wait_ready(box.kubeconfig, NS, list(demo_workload.DEPLOYMENTS), timeout_s=240)
    demo_workload.set_fault(box.kubeconfig, NS, DEPLOY, "crash", "2")
    core = client.CoreV1Api(demo_workload.api_client(box.kubeconfig))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the incident is there once a pod of the new revision restarted
        pods = core.list_namespaced_pod(NS, label_selector=f"app={DEPLOY}", _request_timeout=HTTP_TIMEOUT_S).items
        if any((cs.restart_count or 0) >= 1 for p in pods for cs in (p.status.container_statuses or [])):
            return
        time.sleep(0.5)
    raise BenchError(f"{NS}/{DEPLOY} never restarted after the crash fault")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli_runs(box: h.Sandbox, runs: int) -> dict[str, Any]:
    """Cold processes of the real console script, as a user runs it: wall and CPU time (CPU is what a loaded
    machine cannot inflate much; wall is what the user waits)."""
    exe = str(Path(sys.executable).with_name("k8s-runbooks"))
    help_s, wall_s, cpu_s, reported_s = [], [], [], []
    for _ in range(max(3, runs // 3)):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], env=box.env, capture_output=True, timeout=120, check=True)
        help_s.append(time.perf_counter() - t0)
    for i in range(runs):
        t0, c0 = time.perf_counter(), _children_cpu()
        res = subprocess.run([exe, "diagnose", "-n", NS, "-s", DEPLOY], env=box.env, capture_output=True, text=True,
                             timeout=120)
        wall_s.append(time.perf_counter() - t0)
        cpu_s.append(_children_cpu() - c0)
        if res.returncode != 0:
            raise BenchError(f"diagnose exited {res.returncode}: {res.stderr[-1500:]}")
        m = re.search(r"collected and diagnosed in ([0-9.]+) s", res.stderr)
        if m:
            reported_s.append(float(m.group(1)))
        print(f"  cli #{i + 1}: {wall_s[-1]:.2f} s, {cpu_s[-1]:.2f} CPU-s (collect+diagnose {m.group(1) if m else '?'} s)",
              flush=True)
    res = subprocess.run([exe, "diagnose", "-n", NS, "-s", DEPLOY, "--json"], env=box.env, capture_output=True, text=True,
                         timeout=120)
    answer = json.loads(res.stdout) if res.returncode == 0 else {}
    top = [f"{h['cause']} {h['object']}" for h in answer.get("hypotheses", [])[:3]]
    return {"command": f"k8s-runbooks diagnose -n {NS} -s {DEPLOY}", "wall_s": h.spread(wall_s), "cpu_s": h.spread(cpu_s),
            "collect_diagnose_reported_s": h.spread(reported_s) if reported_s else None, "help_s": h.spread(help_s),
            "top_causes": top}


def inproc_runs(box: h.Sandbox, runs: int) -> dict[str, Any]:
    """collect + diagnose in this process, phases timed from collect's progress messages; the API requests."""
    for key, value in box.env.items():
        if key.startswith(("K8S_RUNBOOKS_", "PREFECT_")) or key == "KUBECONFIG":
            os.environ[key] = value
    from k8s_runbooks.diagnosis.engine import diagnose
    from k8s_runbooks.diagnosis.sources.live import collect
    from k8s_runbooks.kube.client import reset_clients
    from k8s_runbooks.settings import get_settings

    get_settings.cache_clear()
    reset_clients()

    def one() -> tuple[float, float, dict[str, float], str, int]:
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        evidence = collect(NS, service=DEPLOY, progress=lambda m: marks.append((time.perf_counter(), m)))
        t1 = time.perf_counter()
        diagnosis = diagnose(evidence, "", focus=DEPLOY)
        t2 = time.perf_counter()
        phases: dict[str, float] = {}
        prev = t0
        for t, message in marks:
            phases[phase_of(message)] = phases.get(phase_of(message), 0.0) + (t - prev)
            prev = t
        top = f"{diagnosis.top.cause.value} {diagnosis.top.object.kind}/{diagnosis.top.object.name}" if diagnosis.top else "none"
        return t1 - t0, t2 - t1, phases, top, len(evidence.notes)

    first = one()  # builds the client (kubeconfig parse) and warms the engine's imports
    audit_url = f"http://127.0.0.1:{box.env[h.PORT_SETTINGS['api']]}/sandbox/audit"
    before = httpx.get(audit_url, timeout=HTTP_TIMEOUT_S).json()["requests"]
    one()
    after = httpx.get(audit_url, timeout=HTTP_TIMEOUT_S).json()["requests"]
    requests = audit_diff(before, after)
    collect_s, diagnose_s, tops = [], [], set()
    phases: dict[str, list[float]] = {}
    for _ in range(runs):
        c, d, ph, top, _notes = one()
        collect_s.append(c)
        diagnose_s.append(d)
        tops.add(top)
        for k, v in ph.items():
            phases.setdefault(k, []).append(v)
    total = [c + d for c, d in zip(collect_s, diagnose_s)]
    return {"first_call_s": round(first[0] + first[1], 3), "collect_s": h.spread(collect_s),
            "diagnose_ms": h.spread([d * 1000 for d in diagnose_s], 1), "total_s": h.spread(total),
            "phases_median_s": {k: round(h.pct(v, 0.5), 3) for k, v in phases.items()},
            "api_requests": {"total": sum(r["count"] for r in requests), "by_kind": requests},
            "top_causes": sorted(tops), "notes_in_evidence": first[4]}


def audit_diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[str, ...]:
        return (r["verb"], r.get("group", ""), r["resource"], r["subresource"] or "", r["namespace"] or "")

    counts = {key(r): r["count"] for r in before}
    out = []
    for r in after:
        n = r["count"] - counts.get(key(r), 0)
        if n > 0:
            verb, group, resource, sub, ns = key(r)
            out.append({"verb": verb, "resource": f"{resource}/{sub}" if sub else resource, "group": group,
                        "namespace": ns, "count": n})
    return sorted(out, key=lambda r: (r["resource"], r["verb"]))


# ------------------------------------------------------------------------------------ 3. alert → causes artifact
class Alerts:
    def __init__(self, box: h.Sandbox) -> None:
        self.receiver = f"http://127.0.0.1:{box.env[h.PORT_SETTINGS['receiver']]}"
        self.prefect = box.env["PREFECT_API_URL"]
        self.spool = box.state_dir / "receiver" / "spool.sqlite3"
        token_file = box.state_dir / "secrets" / "receiver-token"
        self.headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
        self.http = httpx.Client(timeout=HTTP_TIMEOUT_S)

    def post(self, fingerprint: str) -> None:
        starts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        labels = {"alertname": ALERTNAME, "namespace": NS, "deployment": DEPLOY, "severity": "critical"}
        alert = {"status": "firing", "labels": labels, "annotations": {"summary": "bench"}, "startsAt": starts,
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1/bench", "fingerprint": fingerprint}
        body = {"receiver": "runbooks", "status": "firing", "alerts": [alert], "groupLabels": {}, "commonLabels": labels,
                "commonAnnotations": {}, "externalURL": "http://127.0.0.1/bench", "version": "4",
                "groupKey": f"{{}}:{{fingerprint=\"{fingerprint}\"}}", "truncatedAlerts": 0}
        resp = self.http.post(f"{self.receiver}/v1/alerts/alertmanager", json=body, headers=self.headers)
        if resp.status_code != 200:
            raise BenchError(f"receiver answered {resp.status_code}: {resp.text[:300]}")

    def spool_row(self, fingerprint: str) -> dict[str, Any] | None:
        db = sqlite3.connect(f"file:{self.spool}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM alerts WHERE fingerprint = ?", (fingerprint,)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            db.close()
        return dict(row) if row else None

    def artifacts(self, run_id: str) -> dict[str, float]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        return {a["key"]: epoch(a["created"]) for a in h.post_json(self.http, f"{self.prefect}/artifacts/filter", body) if a.get("key")}

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(h.get_json(self.http, f"{self.prefect}/flow_runs/{run_id}"))

    def milestones(self, run_id: str, sent: float, row: dict[str, Any], arts: dict[str, float]) -> dict[str, float]:
        run = self.run(run_id)
        marks = {"accepted": row["received_at"], "run_created": epoch(run["created"])}
        for st in sorted(h.get_json(self.http, f"{self.prefect}/flow_run_states/", flow_run_id=run_id),
                         key=lambda s: epoch(s["timestamp"])):
            key = {"PENDING": "run_pending", "RUNNING": "run_running"}.get(st["type"])
            if key and key not in marks:
                marks[key] = epoch(st["timestamp"])
        tasks = h.post_json(self.http, f"{self.prefect}/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}},
                                                                            "sort": "EXPECTED_START_TIME_ASC"})
        for t in tasks:
            name = t.get("name", "")
            if name.startswith("collect-evidence") and "collect_start" not in marks and t.get("start_time"):
                marks["collect_start"] = epoch(t["start_time"])
                if t.get("end_time"):
                    marks["collect_end"] = epoch(t["end_time"])
            if name.startswith("diagnose-evidence") and "diagnose_end" not in marks and t.get("end_time"):
                marks["diagnose_end"] = epoch(t["end_time"])
        logs = h.post_json(self.http, f"{self.prefect}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}},
                                                                      "sort": "TIMESTAMP_ASC", "limit": 200})
        held = [epoch(x["timestamp"]) for x in logs if "holding the remediation slot" in x.get("message", "")]
        if held:
            marks["slot_held"] = held[0]
        # collect-evidence logs each stage of the collection (`{namespace}: 5 pods`, ...): when each was done.
        for x in logs:
            message = x.get("message", "")
            if message.startswith(f"{NS}: ") and phase_of(message) != "other":
                marks.setdefault(f"collect:{phase_of(message)}", epoch(x["timestamp"]))
        for key, name in ((CAUSES_KEY, "causes_artifact"), (DIAGNOSIS_KEY, "diagnosis_artifact"), (SNAPSHOT_KEY, "snapshot_artifact")):
            if key in arts:
                marks[name] = arts[key]
        return {k: round(v - sent, 3) for k, v in sorted(marks.items(), key=lambda kv: kv[1])}

    def measure(self, i: int, timeout_s: float, settle_s: float) -> dict[str, Any]:
        fingerprint = f"bench{uuid.uuid4().hex[:12]}"
        out: dict[str, Any] = {"fingerprint": fingerprint, "load_avg_1m": round(os.getloadavg()[0], 2), "errors": []}
        sent = time.time()
        self.post(fingerprint)
        deadline = time.monotonic() + timeout_s
        row: dict[str, Any] | None = None
        arts: dict[str, float] = {}
        while time.monotonic() < deadline:
            if row is None or not row.get("flow_run_id"):
                row = self.spool_row(fingerprint)
            if row and row.get("flow_run_id"):
                arts = self.artifacts(row["flow_run_id"])
                if CAUSES_KEY in arts:
                    break
            time.sleep(0.05)
        else:
            raise BenchError(f"alert {i}: no causes artifact within {timeout_s:.0f} s (spool row: {row})")
        assert row is not None
        run_id = row["flow_run_id"]
        out["run_id"] = run_id
        settle_until = time.monotonic() + settle_s
        state = None
        while time.monotonic() < settle_until:  # let it finish: the next run must not wait for this one's slot
            state = (self.run(run_id).get("state") or {}).get("type")
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(0.3)
        else:
            out["errors"].append(f"run not final after {settle_s:.0f} s ({state})")
        out["final_state"] = state
        out["milestones_s"] = self.milestones(run_id, sent, row, self.artifacts(run_id))
        missing = [m for m in MILESTONES if m not in out["milestones_s"]]
        if missing:
            out["errors"].append(f"milestones not observed: {missing}")
        return out


def alert_runs(box: h.Sandbox, n: int, timeout_s: float, settle_s: float) -> dict[str, Any]:
    alerts = Alerts(box)
    rounds = []
    for i in range(n):
        r = alerts.measure(i, timeout_s, settle_s)
        rounds.append(r)
        m = r["milestones_s"]
        print(f"  alert #{i + 1}: causes artifact {m.get('causes_artifact', '?')} s, RUNNING {m.get('run_running', '?')} s"
              f" ({r['final_state']}, load {r['load_avg_1m']})" + (f" ERRORS {r['errors']}" if r["errors"] else ""), flush=True)
    ok = [r["milestones_s"] for r in rounds if not r["errors"]]
    summary: dict[str, Any] = {"alerts": n, "complete": len(ok), "errors": [e for r in rounds for e in r["errors"]]}
    if ok:
        summary["alert_to_causes_s"] = h.spread([m["causes_artifact"] for m in ok])
        summary["alert_to_running_s"] = h.spread([m["run_running"] for m in ok])
        summary["from_alert_median_s"] = {k: round(h.pct([m[k] for m in ok], 0.5), 3) for k in MILESTONES}
        stages = {}
        for prev, cur in zip(["sent"] + MILESTONES, MILESTONES):
            stages[f"{prev} → {cur}"] = h.spread([m[cur] - (m[prev] if prev != "sent" else 0.0) for m in ok])
        summary["stages_s"] = stages
        phases = sorted({k for m in ok for k in m if k.startswith("collect:")})
        summary["collect_phases_from_start_median_s"] = {
            k: round(h.pct([m[k] - m["collect_start"] for m in ok if k in m], 0.5), 3) for k in phases}
    return {"summary": summary, "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 CLI runs, 3 in-process runs, 3 alerts")
    parser.add_argument("--out")
    parser.add_argument("--cli-runs", type=int, help="cold `diagnose` processes (default 10)")
    parser.add_argument("--inproc-runs", type=int, help="in-process collect + diagnose (default 20)")
    parser.add_argument("--alerts", type=int, help="alerts, one at a time (default 20)")
    parser.add_argument("--alert-timeout", type=float, default=120.0, help="max seconds from alert to causes artifact")
    parser.add_argument("--settle", type=float, default=120.0, help="max seconds to let a run end before the next alert")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the sandbox
    cli_n = args.cli_runs or (3 if args.quick else 10)
    inproc_n = args.inproc_runs or (3 if args.quick else 20)
    alerts_n = args.alerts if args.alerts is not None else (3 if args.quick else 20)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with h.state_dir("live-diagnosis") as directory:
        routes = directory / "live-diagnosis-routes.yaml"
        routes.write_text(ROUTES)
        t0 = time.monotonic()
        with h.full_sandbox(directory, {"K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES": str(routes)}) as box:
            print(f"sandbox up in {time.monotonic() - t0:.0f} s ({directory})", flush=True)
            try:
                prepare_incident(box)
                print(f"== diagnose CLI, {cli_n} cold runs", flush=True)
                cli = cli_runs(box, cli_n)
                print(f"== in-process collect + diagnose, {inproc_n} runs", flush=True)
                inproc = inproc_runs(box, inproc_n)
                print(f"== alert → causes artifact, {alerts_n} alerts", flush=True)
                alerts = alert_runs(box, alerts_n, args.alert_timeout, args.settle)
            except (BenchError, RuntimeError, httpx.HTTPError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
    data = {"benchmark": "live_diagnosis", "quick": args.quick,
            "load_avg": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
            "targets": {"diagnose CLI": "<= 2 s", "alert -> causes artifact": "p95 <= 3 s"},
            "cli": cli, "inproc": inproc, "alert_to_causes": alerts}
    h.write_out(args.out, data)
    s = alerts["summary"]
    print(f"\ndiagnose CLI (cold): median {cli['wall_s']['median']:.2f} s, p95 {cli['wall_s']['p95']:.2f} s, "
          f"{cli['cpu_s']['median']:.2f} CPU-s "
          f"(--help {cli['help_s']['median']:.2f} s); in-process collect+diagnose median {inproc['total_s']['median']:.3f} s, "
          f"{inproc['api_requests']['total']} API requests")
    if "alert_to_causes_s" in s:
        a, r = s["alert_to_causes_s"], s["alert_to_running_s"]
        print(f"alert → causes artifact: median {a['median']:.2f} s, p95 {a['p95']:.2f} s (RUNNING: {r['median']:.2f} / "
              f"{r['p95']:.2f} s), {s['complete']}/{s['alerts']} complete")
        for stage, v in s["stages_s"].items():
            print(f"  {stage:<40} median {v['median']:.3f} s  p95 {v['p95']:.3f} s")
    return 0 if s["complete"] == s["alerts"] or alerts_n == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
