"""Drill MTTD: fault injected → Prometheus alert pending/firing → Alertmanager → receiver → flow run created →
PENDING → RUNNING, on the sandbox's real alert path.

    .venv/bin/python bench/drill_mttd.py [--quick] [--out FILE] [--rounds 3] [--faults crash latency]

Starts `k8s-runbooks sandbox up --no-demo` on free ports in a temporary state dir (cluster, Prometheus,
Alertmanager, Pushgateway, Prefect server, warm runner, receiver), with receiver routes of its own that send
the bench namespace's PodCrashLooping / HighLatency alerts to pod-crash / high-latency in **dry-run** (the
runbook runs for real but changes nothing). Each round uses a fresh 1-replica `sandbox/shop:1` Deployment
(so every alert is a new fingerprint and a new Alertmanager group), waits until Prometheus scrapes it, waits a
random 0–1 s (so the fault lands at a random phase of the 1 s scrape and evaluation loops), then injects the
fault exactly as `k8s-runbooks sandbox fault crash|latency` does (a strategic-merge patch of the container env:
a rollout). Time 0 is the client clock just before that patch. Milestones, all on the same machine clock:

- `crash_observed` (crash) — the API server shows a container of the workload restarted (polled every 0.2 s);
  `slow_pod_ready` (latency) — a pod of the faulty revision is Ready and takes traffic (polled);
- `restart_scraped` (crash) — the first Prometheus sample of the restart counter > 0 or of the CrashLoopBackOff
  waiting reason (the raw sample's scrape timestamp);
- `prometheus_pending`, `prometheus_firing` — the first `ALERTS{alertstate=...}` sample of the alert (the rule
  evaluation's timestamp; with `for: 0s` an alert is firing in the evaluation that first matches: no pending);
- `alertmanager` — Alertmanager's `updatedAt` the first time the alert shows in its API (polled every 0.2 s; with
  Prometheus resending every second this is the first receipt unless a poll came > 1 s late; never later than
  the receiver's receipt, which bounds it);
- `receiver_accepted` — the receiver spool row's `received_at` (committed before the webhook is answered);
- `run_created`, `run_pending`, `run_running` — the flow run's `created` and its state history (Prefect server).

Each run is then left to finish (dry-run; cancelled if not final within `--settle`), and the round's Deployment
and Service are deleted (the fault goes with them) before the next round. Writes per-round milestones, p50/max
per stage (from the fault and from the previous milestone) and the detection settings read from the running
Prometheus and Alertmanager (scrape/evaluation interval, each rule's window and `for`, resend delay, group wait).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import psutil
import yaml

import _harness as h

NAMESPACE = "mttd"
HTTP_TIMEOUT_S = 10.0
POLL_S = 0.2
FAULTS: dict[str, dict[str, str]] = {
    # fault kind → the value `sandbox fault` would set, the alert it should raise, the label naming the workload
    "crash": {"value": "2", "alert": "PodCrashLooping", "label": "deployment", "runbook": "pod-crash"},
    "latency": {"value": "800", "alert": "HighLatency", "label": "service", "runbook": "high-latency"},
}
ROUTES = f"""version: 1
label_rules:
  namespace: dns_label
  deployment: dns_subdomain
  service: dns_subdomain
routes:
  - name: mttd-crash
    sources: [alertmanager]
    match: {{alertname: PodCrashLooping, namespace: {NAMESPACE}}}
    deployment: pod-crash/pod-crash
    approval: dry-run
    parameters:
      params: {{namespace: "{{labels.namespace}}", deployment: "{{labels.deployment}}", approval: "{{approval}}",
               drill: true, verify_timeout_seconds: 0, notes: "bench drill_mttd {{fingerprint}}"}}
  - name: mttd-latency
    sources: [alertmanager]
    match: {{alertname: HighLatency, namespace: {NAMESPACE}}}
    deployment: high-latency/high-latency
    approval: dry-run
    parameters:
      params: {{namespace: "{{labels.namespace}}", service: "{{labels.service}}", approval: "{{approval}}",
               drill: true, monitor_timeout_seconds: 0, notes: "bench drill_mttd {{fingerprint}}"}}
"""
STAGES = {
    "crash": ["crash_observed", "restart_scraped", "prometheus_firing", "alertmanager", "receiver_accepted",
              "run_created", "run_pending", "run_running"],
    "latency": ["slow_pod_ready", "prometheus_pending", "prometheus_firing", "alertmanager", "receiver_accepted",
                "run_created", "run_pending", "run_running"],
}


class BenchError(Exception):
    pass


def epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Probes:
    """Everything the bench reads: Prometheus, Alertmanager, the receiver's spool, Prefect, the sandbox API."""

    def __init__(self, box: h.Sandbox) -> None:
        from kubernetes import client

        from k8s_runbooks.sandbox import demo_workload

        self.box = box
        self.prom = box.env["K8S_RUNBOOKS_PROMETHEUS_URL"]
        self.am = box.env["K8S_RUNBOOKS_ALERTMANAGER_URL"]
        self.prefect = box.env["PREFECT_API_URL"]
        self.spool = box.state_dir / "receiver" / "spool.sqlite3"
        self.http = httpx.Client(timeout=HTTP_TIMEOUT_S)
        api = demo_workload.api_client(box.kubeconfig)
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def close(self) -> None:
        self.http.close()

    # --- Prometheus -------------------------------------------------------------------------------------
    def query(self, expr: str) -> list[dict[str, Any]]:
        data = h.get_json(self.http, f"{self.prom}/api/v1/query", query=expr)
        return list(data["data"]["result"])

    def first_sample(self, selector: str, window: str = "15m", min_value: float = 0.0) -> float | None:
        """Timestamp of the earliest raw sample > min_value of any series matching `selector` (range selector)."""
        times = [float(ts) for series in self.query(f"{selector}[{window}]")
                 for ts, value in series.get("values", []) if float(value) > min_value]
        return min(times) if times else None

    def has_series(self, selector: str) -> bool:
        return bool(self.query(selector))

    # --- Alertmanager -----------------------------------------------------------------------------------
    def am_alert(self, alertname: str, label: str, value: str) -> dict[str, Any] | None:
        params = [("filter", f'alertname="{alertname}"'), ("filter", f'namespace="{NAMESPACE}"'),
                  ("filter", f'{label}="{value}"'), ("active", "true")]
        resp = self.http.get(f"{self.am}/api/v2/alerts", params=params)
        resp.raise_for_status()
        alerts = resp.json()
        return alerts[0] if alerts else None

    # --- receiver spool ---------------------------------------------------------------------------------
    def spool_row(self, alertname: str, label: str, value: str) -> dict[str, Any] | None:
        if not self.spool.exists():
            return None
        db = sqlite3.connect(f"file:{self.spool}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT * FROM alerts WHERE alertname = ? ORDER BY id DESC LIMIT 50", (alertname,)).fetchall()
        except sqlite3.OperationalError:
            return None  # the receiver is mid-checkpoint or the table is not there yet: next poll
        finally:
            db.close()
        for row in rows:
            labels = json.loads(row["labels"])
            if labels.get("namespace") == NAMESPACE and labels.get(label) == value:
                return dict(row)
        return None

    # --- Prefect ----------------------------------------------------------------------------------------
    def flow_run(self, run_id: str) -> dict[str, Any]:
        return dict(h.get_json(self.http, f"{self.prefect}/flow_runs/{run_id}"))

    def states(self, run_id: str) -> list[dict[str, Any]]:
        return list(h.get_json(self.http, f"{self.prefect}/flow_run_states/", flow_run_id=run_id))

    def cancel(self, run_id: str) -> None:
        self.http.post(f"{self.prefect}/flow_runs/{run_id}/set_state",
                       json={"state": {"type": "CANCELLING", "message": "bench drill_mttd: round over"}, "force": True})

    # --- sandbox API ------------------------------------------------------------------------------------
    def pods(self, name: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}",
                                                  _request_timeout=HTTP_TIMEOUT_S).items)


def detection_settings(box: h.Sandbox, probes: Probes) -> dict[str, Any]:
    """The intervals and rule parameters in force, read from the running processes (and the templates)."""
    from k8s_runbooks.sandbox import launchers

    config = yaml.safe_load(h.get_json(probes.http, f"{probes.prom}/api/v1/status/config")["data"]["yaml"])
    flags = h.get_json(probes.http, f"{probes.prom}/api/v1/status/flags")["data"]
    rules = {}
    for group in h.get_json(probes.http, f"{probes.prom}/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            if rule.get("type") == "alerting":
                rules[rule["name"]] = {"for_s": rule.get("duration"), "query": rule.get("query"),
                                       "group_interval_s": group.get("interval")}
    am_config = yaml.safe_load(h.get_json(probes.http, f"{probes.am}/api/v2/status")["config"]["original"])
    route = am_config.get("route", {})
    runner: dict[str, Any] = {}
    try:
        pid = int((box.state_dir / "pids" / "runner.pid").read_text().split()[0])
        cmd = psutil.Process(pid).cmdline()
        runner = {"mode": cmd[cmd.index("--runner") + 1], "query_seconds": float(cmd[cmd.index("--query-seconds") + 1]),
                  "event_nudge": "--no-nudge" not in cmd}
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return {
        "scrape_interval": config["global"].get("scrape_interval"),
        "evaluation_interval": config["global"].get("evaluation_interval"),
        "sd_refresh_interval": next((sd.get("refresh_interval") for job in config.get("scrape_configs", [])
                                     for sd in job.get("http_sd_configs", []) or []), None),
        "rules_alert_resend_delay": flags.get("rules.alert.resend-delay"),
        "rules": {name: rules.get(name) for name in ("PodCrashLooping", "HighLatency")},
        "rule_template_params": launchers.sandbox_rule_params(),
        "alertmanager": {k: route.get(k) for k in ("group_by", "group_wait", "group_interval", "repeat_interval")},
        "runner": runner,
        "receiver_dispatch": "woken by each accepted alert (no polling)",
    }


def make_workload(probes: Probes, name: str) -> str:
    """A fresh healthy 1-replica workload, scraped by Prometheus; returns its pod-template hash."""
    from k8s_runbooks.sandbox import demo_workload

    demo_workload.ensure_workload(probes.box.kubeconfig, NAMESPACE, {name: 1})
    demo_workload.wait_ready(probes.box.kubeconfig, NAMESPACE, [name], timeout_s=240)
    # Steady state as Prometheus sees it: the pod's restart counter and its request latencies are scraped.
    deadline = time.monotonic() + 120
    selectors = [f'kube_pod_container_status_restarts_total{{namespace="{NAMESPACE}",pod=~"{name}-.+"}}',
                 f'http_request_duration_seconds_count{{namespace="{NAMESPACE}",service="{name}"}}']
    while not all(probes.has_series(s) for s in selectors):
        if time.monotonic() > deadline:
            raise BenchError(f"{NAMESPACE}/{name}: Prometheus has no series for it after 120 s")
        time.sleep(0.5)
    hashes = {p.metadata.labels.get("pod-template-hash") for p in probes.pods(name)}
    return next(iter(hashes - {None}), "")


def delete_workload(probes: Probes, name: str) -> None:
    # _preload_content=False: the answer (a Status) is not needed, and the client's models do not parse it.
    for call in (lambda: probes.apps.delete_namespaced_deployment(name, NAMESPACE, _request_timeout=HTTP_TIMEOUT_S,
                                                                  _preload_content=False),
                 lambda: probes.core.delete_namespaced_service(name, NAMESPACE, _request_timeout=HTTP_TIMEOUT_S,
                                                               _preload_content=False)):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - clean-up goes on; the sandbox is torn down at the end anyway
            print(f"  clean-up of {name}: {exc.__class__.__name__}: {str(exc)[:200]}", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not probes.pods(name):
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.5)


def run_round(probes: Probes, kind: str, index: int, detect_timeout_s: float, settle_s: float) -> dict[str, Any]:
    from k8s_runbooks.sandbox import demo_workload

    spec = FAULTS[kind]
    name = f"{kind}-{index}-{uuid.uuid4().hex[:4]}"
    alert, label = spec["alert"], spec["label"]
    out: dict[str, Any] = {"fault": kind, "workload": f"{NAMESPACE}/{name}", "value": spec["value"], "errors": []}
    try:
        old_hash = make_workload(probes, name)
        time.sleep(random.uniform(0.0, 1.0))
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
        t0 = time.time()
        demo_workload.set_fault(probes.box.kubeconfig, NAMESPACE, name, kind, spec["value"])
        marks: dict[str, float] = {"fault_patched": time.time() - t0}
        am_first: tuple[float, float] | None = None  # (client first seen, updatedAt)
        row: dict[str, Any] | None = None
        run: dict[str, Any] | None = None
        deadline = time.monotonic() + detect_timeout_s
        while time.monotonic() < deadline:
            now = time.time()
            if kind == "crash" and "crash_observed" not in marks:
                if any((cs.restart_count or 0) >= 1 for p in probes.pods(name) for cs in (p.status.container_statuses or [])):
                    marks["crash_observed"] = now - t0
            if kind == "latency" and "slow_pod_ready" not in marks:
                for p in probes.pods(name):
                    new = p.metadata.labels.get("pod-template-hash") != old_hash
                    ready = any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
                    if new and ready and p.metadata.deletion_timestamp is None:
                        marks["slow_pod_ready"] = now - t0
            if am_first is None:
                am = probes.am_alert(alert, label, name)
                if am is not None:
                    am_first = (now, epoch(am["updatedAt"]))
            if row is None or not row.get("flow_run_id"):
                row = probes.spool_row(alert, label, name)
            if row is not None and row.get("flow_run_id"):
                run = probes.flow_run(row["flow_run_id"])
                state = (run.get("state") or {}).get("type")
                if state in ("RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED", "CANCELLING"):
                    break
            time.sleep(POLL_S)
        else:
            if row is not None and row.get("flow_run_id"):
                what = f"run {row['flow_run_id']} not RUNNING"
            elif row is not None:
                what = f"no run created (spool row {row['state']}: {row.get('reason') or row.get('last_error')})"
            else:
                what = "alert never reached the receiver" if am_first else "alert never reached Alertmanager"
            raise BenchError(f"{what} within {detect_timeout_s:.0f} s of the fault")

        # Exact server-side times, read once the run is RUNNING.
        sel = f'namespace="{NAMESPACE}",{label}="{name}",alertname="{alert}"'
        for stage, state in (("prometheus_pending", "pending"), ("prometheus_firing", "firing")):
            ts = probes.first_sample(f'ALERTS{{{sel},alertstate="{state}"}}')
            if ts is not None:
                marks[stage] = ts - t0
        if kind == "crash":
            pods = f'namespace="{NAMESPACE}",pod=~"{name}-.+"'
            restart = [probes.first_sample(f"kube_pod_container_status_restarts_total{{{pods}}}"),
                       probes.first_sample(f'kube_pod_container_status_waiting_reason{{{pods},reason="CrashLoopBackOff"}}')]
            seen = [t for t in restart if t is not None]
            if seen:
                marks["restart_scraped"] = min(seen) - t0
                out["restart_scraped_by"] = "restart counter" if restart[0] == min(seen) else "CrashLoopBackOff reason"
        assert row is not None and run is not None
        marks["receiver_accepted"] = row["received_at"] - t0
        if am_first is not None:
            out["alertmanager_first_polled_s"] = round(am_first[0] - t0, 3)
            marks["alertmanager"] = min(am_first[1], row["received_at"]) - t0
        marks["run_created"] = epoch(run["created"]) - t0
        for st in sorted(probes.states(run["id"]), key=lambda s: epoch(s["timestamp"])):
            key = {"PENDING": "run_pending", "RUNNING": "run_running"}.get(st["type"])
            if key and key not in marks:
                marks[key] = epoch(st["timestamp"]) - t0
        out["milestones_s"] = {k: round(v, 3) for k, v in sorted(marks.items(), key=lambda kv: kv[1])}
        params = (run.get("parameters") or {}).get("params", {})
        out["run"] = {"id": run["id"], "route": row.get("route"), "approval": params.get("approval"),
                      "target": params.get("deployment") or params.get("service")}
        missing = [s for s in STAGES[kind] if s not in marks and not (s == "prometheus_pending" and kind == "crash")]
        if missing:
            out["errors"].append(f"milestones not observed: {missing}")
        if out["run"]["approval"] != "dry-run" or out["run"]["target"] != name:
            out["errors"].append(f"unexpected run parameters: {params}")

        # Let the dry run finish (so it does not run into the next round), else cancel it.
        settle_until = time.monotonic() + settle_s
        final = None
        while time.monotonic() < settle_until:
            final = (probes.flow_run(run["id"]).get("state") or {}).get("type")
            if final in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(0.5)
        else:
            probes.cancel(run["id"])
            final = f"{final} (cancelled after {settle_s:.0f} s)"
        out["run"]["final_state"] = final
        out["run"]["final_after_fault_s"] = round(time.time() - t0, 1)
    except (BenchError, httpx.HTTPError, RuntimeError, OSError) as exc:
        out["errors"].append(f"{exc.__class__.__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one broken round (kube client errors included) must not lose the others
        out["errors"].append(f"{exc.__class__.__name__}: {str(exc)[:500]}")
    finally:
        delete_workload(probes, name)
    out["ok"] = not out["errors"]
    return out


def pct50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(kind: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rounds if r.get("milestones_s")]
    stages = [s for s in STAGES[kind] if any(s in r["milestones_s"] for r in ok)]
    from_fault: dict[str, dict[str, float]] = {}
    step: dict[str, dict[str, float]] = {}
    for i, stage in enumerate(stages):
        values = [r["milestones_s"][stage] for r in ok if stage in r["milestones_s"]]
        from_fault[stage] = {"p50": pct50(values), "max": round(max(values), 3), "n": len(values)}
        prev = stages[i - 1] if i else "fault"
        deltas = [r["milestones_s"][stage] - (r["milestones_s"][prev] if i else 0.0) for r in ok
                  if stage in r["milestones_s"] and (i == 0 or prev in r["milestones_s"])]
        if deltas:
            step[f"{prev} → {stage}"] = {"p50": pct50(deltas), "max": round(max(deltas), 3), "n": len(deltas)}
    return {"rounds": len(rounds), "rounds_ok": sum(1 for r in rounds if r["ok"]), "from_fault_s": from_fault,
            "stage_s": step}


BOUNDS = {
    "crash": [
        "fault → crash_observed: the rollout's new pod starts, runs FAULT_CRASH_AFTER_S=2 s and exits; the kubelet "
        "restarts it at once the first time (restartCount 1), then backs off (CrashLoopBackOff).",
        "crash_observed → restart_scraped: up to one scrape interval (1 s) of kube-state-metrics.",
        "restart_scraped → prometheus_firing: up to one evaluation interval (1 s); `for: 0s`, so the first "
        "evaluation that matches fires (no pending state); increase() over the window needs the 0 sample before the "
        "restart, which the 1 s scrapes of the ~3 s-old pod give.",
        "prometheus_firing → alertmanager: Prometheus sends at once when an alert starts firing (resend every 1 s).",
        "alertmanager → receiver_accepted: group_wait 0s for a new group (one group per workload).",
        "receiver_accepted → run_created: the dispatcher is woken by the commit; one Prefect create call.",
        "run_created → run_pending: the runner claims it: at once on the Scheduled-event nudge, else its next poll (1 s).",
        "run_pending → run_running: fork of the warm fork server + Prefect's engine start-up in the run.",
    ],
    "latency": [
        "fault → slow_pod_ready: the rollout's new pod starts and passes its readiness probe (1 s period).",
        "slow_pod_ready → prometheus_pending: a slow request is counted when it completes (0.8 s); Prometheus must "
        "discover the new pod (http_sd refresh every 2 s), scrape it twice (rate() over the 30 s window needs two "
        "samples of the new series), and an evaluation (1 s) must see the service's p95 over 300 ms: ~6 s at most.",
        "prometheus_pending → prometheus_firing: the rule's `for: 5s`, rounded up to the next evaluation.",
        "the rest as for the crash.",
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round per fault")
    parser.add_argument("--out")
    parser.add_argument("--rounds", type=int, help="rounds per fault (default 3; --quick 1)")
    parser.add_argument("--faults", nargs="*", choices=list(FAULTS), help="default: crash latency")
    parser.add_argument("--detect-timeout", type=float, default=240.0, help="max seconds from fault to run RUNNING")
    parser.add_argument("--settle", type=float, default=90.0, help="max seconds to let a run end before cancelling it")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the sandbox
    rounds = args.rounds or (1 if args.quick else 3)
    faults = args.faults or list(FAULTS)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in faults}
    load_start = os.getloadavg()[0]
    with h.state_dir("drill-mttd") as directory:
        routes = directory / "mttd-routes.yaml"
        routes.write_text(ROUTES)
        t0 = time.monotonic()
        with h.full_sandbox(directory, {"K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES": str(routes)}) as box:
            up_s = time.monotonic() - t0
            print(f"sandbox up in {up_s:.0f} s ({directory})", flush=True)
            probes = Probes(box)
            try:
                settings = detection_settings(box, probes)
                print(f"scrape {settings['scrape_interval']}, evaluation {settings['evaluation_interval']}, rules "
                      + ", ".join(f"{n}: for {r['for_s']} s" for n, r in settings["rules"].items() if r), flush=True)
                # Interleaved (crash, latency, crash, ...) so a load change spreads over both faults.
                for i in range(rounds):
                    for kind in faults:
                        r = run_round(probes, kind, i + 1, args.detect_timeout, args.settle)
                        results[kind].append(r)
                        m = r.get("milestones_s", {})
                        shown = ", ".join(f"{k} {v:.2f}" for k, v in m.items()) or "-"
                        print(f"{kind} #{i + 1}: {shown}" + (f"; ERRORS {r['errors']}" if r["errors"] else "")
                              + f" (load {r.get('load_avg_1m', '?')})", flush=True)
            finally:
                probes.close()
    data = {
        "benchmark": "drill_mttd", "quick": args.quick, "rounds_per_fault": rounds, "sandbox_up_s": round(up_s, 1),
        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "detection_settings": settings, "what_bounds_each_stage": {k: BOUNDS[k] for k in faults},
        "summary": {k: summarise(k, v) for k, v in results.items()}, "rounds": results,
    }
    h.write_out(args.out, data)
    print("\nfault → runbook RUNNING (seconds from the Deployment patch; p50 / max over the rounds)")
    for kind, s in data["summary"].items():
        print(f"  {kind}: {s['rounds_ok']}/{s['rounds']} rounds complete")
        for stage, v in s["from_fault_s"].items():
            print(f"    {stage:<20} {v['p50']:>7.2f} {v['max']:>7.2f}")
    ok = all(s["rounds_ok"] == s["rounds"] for s in data["summary"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
