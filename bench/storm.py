"""Alert storm: 10,000 Alertmanager notifications (200 fingerprints, repeats and resolutions mixed in) against
the alert receiver on loopback, with a real Prefect server (SQLite) behind it.

    .venv/bin/python bench/storm.py [--quick] [--out FILE] [--concurrency 8] [--notifications N]

Starts, in a temporary directory on free ports: the sandbox's Prefect server (`k8s_runbooks.sandbox.prefect_server`)
with the pod-crash deployment registered (runs stay Scheduled: no runner, only their creation matters), the
receiver (`python -m k8s_runbooks_prefect.alerts.server`, its own process), then the load process
(`bench/_storm_load.py`, also its own process). While the storm runs, this process samples the receiver's
`GET /metrics` (spool depth, event outbox depth) and its RSS/CPU every 100 ms; after it, it waits until
every alert is dispatched, stops the receiver and reads back:

- from Prefect: every flow run of the deployment (by idempotency key), so "N runs" is Prefect's count;
- from the spool file: one row per fingerprint, its state, repeats and resolution, to account for every
  acknowledged notification (0 lost) and to check that no runbook was started for an alert already
  resolved (a run exists only for rows dispatched before their resolved notification was acknowledged;
  a resolution that lands while the run is being created cancels that run before it can start).

Writes the figures as JSON to --out and prints a summary. Exit status 1 if an invariant is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TOKEN = "storm-bench-token"
DEPLOYMENT = "pod-crash/pod-crash"
HTTP_TIMEOUT = 10.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_"))}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def niceness(value: int) -> Any:
    """preexec_fn raising the child's scheduling priority (negative values need root): on a machine shared with
    other work, this approximates the CPU a dedicated 2-core machine would give the receiver and the load."""
    return (lambda: os.nice(value)) if value else None


def spawn(name: str, cmd: list[str], env: dict[str, str], log: Path, nice: int = 0) -> Proc:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                preexec_fn=niceness(nice))
    return Proc(name, proc, log)


def start_prefect(tmp: Path, nice: int = 0) -> tuple[Proc, str, dict[str, str]]:
    port = free_port()
    home = tmp / "prefect"
    home.mkdir()
    api = f"http://127.0.0.1:{port}/api"
    server_env = clean_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false",
                           PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    proc = spawn("prefect", [sys.executable, "-m", "k8s_runbooks.sandbox.prefect_server", "--host", "127.0.0.1",
                             "--port", str(port)], server_env, tmp / "prefect.log", nice)
    # 3.5-7 s on an idle machine; over 240 s was seen with a load average of 40 on 2 cores.
    wait_for("the Prefect server", lambda: proc.proc.poll() is None and httpx.get(f"{api}/health", timeout=2).status_code == 200,
             timeout=600)
    client_env = clean_env(PREFECT_HOME=str(home / "client"), PREFECT_API_URL=api)
    return proc, api, client_env


def register_deployment(api: str) -> str:
    """The real pod-crash deployment (its parameter schema enforced), registered without a runner."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from k8s_runbooks_prefect import deploy

    spec = next(s for s in deploy.SPECS if s.name == "pod-crash")
    with temporary_settings({PREFECT_API_URL: api}):
        return str(deploy.runner_deployment(spec, drills_active=False).apply())


def start_receiver(tmp: Path, client_env: dict[str, str], nice: int = 0) -> tuple[Proc, str, Path]:
    port = free_port()
    spool = tmp / "spool.sqlite3"
    env = {**client_env, "K8S_RUNBOOKS_RECEIVER_TOKEN": TOKEN}
    proc = spawn("receiver", [sys.executable, "-m", "k8s_runbooks_prefect.alerts.server", "--port", str(port),
                              "--routes", str(REPO / "deployments" / "alert-routes.yaml"), "--spool", str(spool)],
                 env, tmp / "receiver.log", nice)
    url = f"http://127.0.0.1:{port}"
    wait_for("the receiver", lambda: proc.proc.poll() is None and httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
             timeout=120)
    return proc, url, spool


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@dataclass
class Sampler:
    """Spool depth, outbox depth and runs created (receiver's /metrics) plus RSS and CPU, every `interval`."""

    url: str
    pid: int
    interval: float = 0.1
    samples: list[dict[str, float | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        proc = psutil.Process(self.pid)
        started = time.monotonic()
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            while not self._stop.is_set():
                t = time.monotonic() - started
                try:
                    text = client.get(f"{self.url}/metrics").text
                    cpu = proc.cpu_times()
                    self.samples.append({
                        "t": round(t, 2),
                        "spool_depth": metric(text, "k8s_runbooks_receiver_spool_depth"),
                        "outbox_depth": metric(text, "k8s_runbooks_receiver_event_outbox_depth"),
                        "runs_created": metric(text, "k8s_runbooks_receiver_flow_runs_created_total"),
                        "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                        "cpu_s": round(cpu.user + cpu.system, 2),
                    })
                except (httpx.HTTPError, psutil.Error):
                    pass
                self._stop.wait(self.interval)

    def last(self) -> dict[str, float | None]:
        return self.samples[-1] if self.samples else {}


def prefect_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        while True:
            resp = client.post(f"{api}/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment_id]}}, "limit": 200, "offset": len(runs), "sort": "ID_DESC"})
            resp.raise_for_status()
            page = resp.json()
            runs += page
            if len(page) < 200:
                return runs


def spool_rows(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM alerts ORDER BY id")]
    finally:
        db.close()


def iso_to_epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def verify(load: dict[str, Any], runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every invariant of the storm; `problems` lists what broke (empty = all held)."""
    problems: list[str] = []
    sent = load["sent_per_fingerprint"]
    acked = load["acked_per_fingerprint"]
    resolved_ack = load["first_resolved_ack"]
    by_fp = {r["fingerprint"]: r for r in rows}
    runs_by_fp: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        key = run.get("idempotency_key") or ""
        fp = key.split("|")[1] if key.count("|") >= 2 else None
        if fp is None:
            problems.append(f"run {run['id']} has no alert idempotency key ({key!r})")
            continue
        runs_by_fp.setdefault(fp, []).append(run)

    lost = load["notifications"] - load["accepted"]
    recorded_total = 0
    for fp, count in sent.items():
        row = by_fp.get(fp)
        if row is None:
            problems.append(f"{fp}: {count} notifications sent, no spool row")
            continue
        recorded = 1 + row["repeats"] + (1 if row["resolved_at"] is not None else 0)
        recorded_total += recorded
        if recorded != acked.get(fp, 0):
            problems.append(f"{fp}: {acked.get(fp, 0)} notifications acknowledged, the spool accounts for {recorded}")

    duplicates = {fp: len(r) for fp, r in runs_by_fp.items() if len(r) > 1}
    if duplicates:
        problems.append(f"fingerprints with more than one run: {duplicates}")
    resolved_fps = set(load["resolved_fingerprints"])
    dispatched_rows = [r for r in rows if r["state"] == "dispatched"]
    cancelled = []
    started_after_resolve = []
    resolved_before_dispatch = 0
    for fp in load["firing_only_fingerprints"]:
        row = by_fp.get(fp)
        if row is None or row["state"] != "dispatched" or len(runs_by_fp.get(fp, [])) != 1:
            problems.append(f"{fp} (never resolved): state {row and row['state']}, {len(runs_by_fp.get(fp, []))} runs")
    for fp in resolved_fps:
        row = by_fp.get(fp)
        fp_runs = runs_by_fp.get(fp, [])
        if row is None:
            continue
        if row["state"] == "resolved" and not fp_runs:
            resolved_before_dispatch += 1
            continue
        for run in fp_runs:
            state = (run.get("state") or {}).get("type")
            if state == "CANCELLED" or state == "CANCELLING":
                cancelled.append(fp)
            elif iso_to_epoch(run["created"]) >= resolved_ack[fp]:
                started_after_resolve.append(fp)
        if row["state"] == "dispatched" and not fp_runs:
            problems.append(f"{fp}: spool says dispatched ({row['flow_run_id']}) but Prefect has no run")
    if started_after_resolve:
        problems.append(f"runs created after their alert's resolution was acknowledged: {started_after_resolve}")
    live_runs = [r for r in runs if (r.get("state") or {}).get("type") not in ("CANCELLED", "CANCELLING")]
    expected = len(load["firing_only_fingerprints"]) + len(resolved_fps) - resolved_before_dispatch - len(cancelled)
    if len(live_runs) != expected or len(live_runs) != len(dispatched_rows):
        problems.append(f"{len(live_runs)} runs that can start in Prefect, expected {expected}; "
                        f"{len(dispatched_rows)} rows dispatched in the spool")
    if lost:
        problems.append(f"{lost} notifications not acknowledged: {load['status']} {load['errors'][:5]}")
    return {
        "problems": problems, "lost": lost,
        "notifications_recorded_by_spool": recorded_total,
        "runs_in_prefect": len(runs), "runs_that_can_start": len(live_runs), "runs_expected": expected,
        "runs_cancelled_resolved_during_creation": len(cancelled),
        "resolved_fingerprints": len(resolved_fps),
        "resolved_before_dispatch_no_run": resolved_before_dispatch,
        "firing_only_fingerprints": len(load["firing_only_fingerprints"]),
        "duplicate_runs": sum(n - 1 for n in duplicates.values()),
        "spool_states": dict(Counter(r["state"] for r in rows)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="storm-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            prefect, api, client_env = start_prefect(tmp, args.nice)
            procs.append(prefect)
            deployment_id = register_deployment(api)
            receiver, url, spool = start_receiver(tmp, client_env, args.nice)
            procs.append(receiver)
            time.sleep(1.0)  # let the receiver settle (dispatcher connected) before the rest measurement
            rest = psutil.Process(receiver.proc.pid).memory_info().rss / 2**20
            sampler = Sampler(url, receiver.proc.pid)
            sampler.start()
            load_out = tmp / "load.json"
            cmd = [sys.executable, str(HERE / "_storm_load.py"), "--url", url, f"--token={TOKEN}", "--out", str(load_out),
                   "--notifications", str(args.notifications), "--fingerprints", str(args.fingerprints),
                   "--resolved-fraction", str(args.resolved_fraction), "--concurrency", str(args.concurrency),
                   "--seed", str(args.seed)]
            load_started = time.monotonic()
            t0 = sampler.samples[-1]["t"] if sampler.samples else 0.0
            result = subprocess.run(cmd, cwd=REPO, timeout=900, preexec_fn=niceness(args.nice))
            load_seconds = time.monotonic() - load_started
            if not load_out.exists():
                raise RuntimeError(f"the load process wrote no results (exit {result.returncode})")
            load = json.loads(load_out.read_text())
            drain_started = time.monotonic()
            wait_for("the spool to drain (every alert dispatched, every event emitted)",
                     lambda: sampler.last().get("spool_depth") == 0 and sampler.last().get("outbox_depth") == 0
                     and time.monotonic() - drain_started > 0.3, timeout=600)
            drain_seconds = time.monotonic() - drain_started
            sampler.stop()
            receiver.stop()
            runs = prefect_runs(api, deployment_id)
            rows = spool_rows(spool)
            checks = verify(load, runs, rows)
            storm_samples = [s for s in sampler.samples if s["t"] is not None and s["t"] >= t0]
            during = [s for s in storm_samples if s["t"] <= t0 + load_seconds]
            peak_depth = max((s["spool_depth"] or 0 for s in storm_samples), default=0)
            cpu = [s["cpu_s"] for s in during if s["cpu_s"] is not None]
            return {
                "figures": {
                    "notifications": load["notifications"], "fingerprints": load["fingerprints"],
                    "resolved_notifications": load["resolved_notifications"], "concurrency": load["concurrency"],
                    "accepted": load["accepted"], "storm_seconds": round(load["seconds"], 3),
                    "accepted_per_second": round(load["accepted_per_second"] or 0, 1),
                    "ack_ms": {k: (round(v, 2) if v is not None else None) for k, v in load["ack_ms"].items()},
                    "status": load["status"], "outcomes": load["outcomes"],
                    "lost": checks["lost"], "runs_in_prefect": checks["runs_in_prefect"],
                    "runs_that_can_start": checks["runs_that_can_start"], "runs_expected": checks["runs_expected"],
                    "duplicate_runs": checks["duplicate_runs"],
                    "peak_spool_depth": peak_depth, "drain_seconds_after_storm": round(drain_seconds, 2),
                    "receiver_rss_mb": {"rest": round(rest, 1),
                                        "peak_storm": max((s["rss_mb"] or 0 for s in storm_samples), default=None)},
                    "receiver_cpu_seconds_during_storm": round(cpu[-1] - cpu[0], 2) if len(cpu) > 1 else None,
                    "receiver_cpu_ms_per_alert": round((cpu[-1] - cpu[0]) / load["accepted"] * 1000, 3)
                    if len(cpu) > 1 and load["accepted"] else None,
                    "load_process_cpu_seconds": round(load["load_process_cpu_seconds"], 2),
                },
                "checks": checks,
                "accepted_per_second_timeline": load["accepted_per_second_timeline"],
                "spool_depth_timeline": [{"t": round(s["t"] - t0, 1), "spool_depth": s["spool_depth"],
                                          "outbox_depth": s["outbox_depth"], "runs_created": s["runs_created"],
                                          "rss_mb": s["rss_mb"]} for s in storm_samples[::2]],
                "load_errors": load["errors"],
            }
        except BaseException:
            for p in procs:
                print(f"--- {p.name} log tail ---\n{p.tail()}", file=sys.stderr)
            raise
        finally:
            for p in reversed(procs):
                p.stop()


def summary(out: dict[str, Any]) -> str:
    f, c = out["figures"], out["checks"]
    depth = out["spool_depth_timeline"]
    every = max(1, len(depth) // 12)
    depth_line = "  ".join(f"{d['t']:.0f}s:{d['spool_depth']:.0f}" for d in depth[::every] if d["spool_depth"] is not None)
    lines = [
        f"storm: {f['notifications']} notifications ({f['fingerprints']} fingerprints, {f['resolved_notifications']} resolved), "
        f"{f['concurrency']} connections, load avg {out['machine']['load_avg_1m']:.2f} on {out['machine']['cpus']} cores"
        + (f", Prefect, receiver and load at nice {out['nice']}" if out["nice"] else ""),
        f"  accepted {f['accepted']} in {f['storm_seconds']:.2f} s = {f['accepted_per_second']:.0f} alerts/s; "
        f"ack p50 {f['ack_ms']['p50']:.1f} ms, p99 {f['ack_ms']['p99']:.1f} ms, max {f['ack_ms']['max']:.1f} ms",
        f"  lost {f['lost']}; runs in Prefect {f['runs_in_prefect']} (can start {f['runs_that_can_start']}, "
        f"expected {f['runs_expected']}: {c['firing_only_fingerprints']} never resolved + "
        f"{c['resolved_fingerprints'] - c['resolved_before_dispatch_no_run'] - c['runs_cancelled_resolved_during_creation']} "
        f"dispatched before their resolution; {c['resolved_before_dispatch_no_run']} resolved first: no run; "
        f"{c['runs_cancelled_resolved_during_creation']} cancelled), duplicates {f['duplicate_runs']}",
        f"  spool depth peak {f['peak_spool_depth']:.0f}, drained {f['drain_seconds_after_storm']:.1f} s after the storm; "
        f"depth over time: {depth_line}",
        f"  receiver RSS {f['receiver_rss_mb']['rest']} MB at rest, {f['receiver_rss_mb']['peak_storm']} MB peak; "
        f"CPU {f['receiver_cpu_seconds_during_storm']} s during the storm ({f['receiver_cpu_ms_per_alert']} ms per alert, "
        f"dispatcher included); load process CPU {f['load_process_cpu_seconds']} s",
    ]
    lines += [f"  PROBLEM: {p}" for p in c["problems"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 notifications, 50 fingerprints (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "storm.json")
    parser.add_argument("--notifications", type=int)
    parser.add_argument("--fingerprints", type=int)
    parser.add_argument("--resolved-fraction", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the Prefect server, the receiver and the load process, e.g. -20 (root) "
                             "on a shared machine")
    args = parser.parse_args()
    args.notifications = args.notifications or (2_000 if args.quick else 10_000)
    args.fingerprints = args.fingerprints or (50 if args.quick else 200)
    machine = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        out = run(args)
    except (RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        print(f"storm: failed: {exc}", file=sys.stderr)
        return 1
    machine["load_avg_1m_after"] = os.getloadavg()[0]
    out = {"machine": machine, "quick": args.quick, "nice": args.nice, **out}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(summary(out))
    print(f"figures: {args.out}")
    return 1 if out["checks"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
