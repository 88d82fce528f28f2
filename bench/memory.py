"""Memory of the sandbox's long-running processes at rest, during an alert storm (and the runbook runs it starts),
and after.

    .venv/bin/python bench/memory.py [--quick] [--out FILE] [--notifications N] [--fingerprints N] [--storms N]

Starts `k8s-runbooks sandbox up --no-demo` on free ports in a temporary state dir, with receiver routes of its
own that send the storm's alerts (PodCrashLooping, namespace `storm`) to pod-crash in **dry-run**: the namespace
has no workload, so each run starts for real and ends Failed at its first read of the Deployment (NotFound: cheap,
and it changes nothing); one run per fingerprint (nothing
resolves), so the storm starts exactly `--fingerprints` runs, which the runner executes at most 5 at a time
(Prefect's default process limit). Processes, found from `<state dir>/pids/<name>.pid`:

- receiver (`k8s_runbooks_prefect.alerts.server`), the runner (`k8s_runbooks_prefect.deploy serve`: warm runner) and its fork
  server, with the runs forked from it (each run's peak, the most at once, and their summed unique memory),
  the sandbox API server (`k8s_runbooks.sandbox.cluster`; its pods are not counted — there are none here), the
  Prefect server (with any children), and for reference Prometheus, Alertmanager and Pushgateway.

RSS of each every 0.2 s; USS and PSS (psutil `memory_full_info`, from /proc/<pid>/smaps_rollup, which costs
10-25 ms of kernel time per 250 MB process) every 10th sample (~2 s), so their peaks are coarser.
Phases: **rest** (median over `--rest` seconds, once everything has been up for 10 s), **peak** (maximum from
the storm's first notification until every run it started is final), **after** (median over `--rest` seconds,
5 s after the last run ended). The storm is `bench/_storm_load.py` (8 keep-alive connections, Alertmanager v4
notifications; repeats of the firing alerts fill it up to `--notifications`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

import _harness as h

HERE = Path(__file__).resolve().parent
NAMESPACE = "storm"  # the namespace _storm_load.py's alerts name
SAMPLE_S = 0.2
# USS/PSS read /proc/<pid>/smaps_rollup: 10-25 ms of kernel time per 250 MB process, ~150 ms for all of them, so
# they are read on every 10th sample (~2 s) only; RSS (/proc/<pid>/statm, ~0.01 ms) on every sample.
FULL_EVERY = 10
HTTP_TIMEOUT_S = 10.0
MB = 2**20
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ROUTES = f"""version: 1
label_rules:
  namespace: dns_label
  deployment: dns_subdomain
routes:
  - name: memory-storm
    sources: [alertmanager]
    match: {{alertname: PodCrashLooping, namespace: {NAMESPACE}}}
    deployment: pod-crash/pod-crash
    approval: dry-run
    parameters:
      params: {{namespace: "{{labels.namespace}}", deployment: "{{labels.deployment}}", approval: "{{approval}}",
               verify_timeout_seconds: 0, notes: "bench memory {{fingerprint}}"}}
"""
# name in the pids dir → name in the report; the runner's children are split out below.
COMPONENTS = {"receiver": "receiver", "runner": "runner", "cluster": "sandbox API server", "prefect": "Prefect server",
              "prometheus": "Prometheus", "alertmanager": "Alertmanager", "pushgateway": "Pushgateway"}


class BenchError(Exception):
    pass


def mem(proc: psutil.Process, full: bool) -> dict[str, float]:
    if full:
        try:
            info = proc.memory_full_info()
            return {"rss": info.rss / MB, "uss": info.uss / MB, "pss": getattr(info, "pss", 0.0) / MB}
        except psutil.AccessDenied:
            pass
    return {"rss": proc.memory_info().rss / MB}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


@dataclass
class Sampler:
    """Every SAMPLE_S: memory of each component (its process; the Prefect server with its children), the fork
    server, and each run forked from it."""

    pids: dict[str, int]
    samples: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[int, dict[str, float]] = field(default_factory=dict)  # pid → peak rss/uss/pss of a forked run
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def fork_server(self) -> psutil.Process | None:
        runner = self._procs.get("runner")
        if runner is None:
            return None
        try:
            return next((c for c in runner.children() if "multiprocessing.forkserver" in " ".join(c.cmdline())), None)
        except psutil.Error:
            return None

    def sample(self, full: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"t": time.monotonic(), "full": full}
        for name, proc in self._procs.items():
            try:
                m = mem(proc, full)
                if name == "prefect":
                    for child in proc.children(recursive=True):
                        try:
                            m = add(m, mem(child, full))
                        except psutil.Error:
                            pass
                row[name] = m
            except psutil.Error:
                row[name] = None
        server = self.fork_server()
        if server is not None:
            try:
                row["fork server"] = mem(server, full)
                forked = server.children()
            except psutil.Error:
                forked = []
            total: dict[str, float] = {}
            count = 0
            for child in forked:
                try:
                    m = mem(child, full)
                except psutil.Error:
                    continue
                count += 1
                total = add(total, m)
                peak = self.runs.setdefault(child.pid, {})
                for k, v in m.items():
                    peak[k] = max(peak.get(k, 0.0), v)
            row["runs"] = {"count": count, **total}
        return row

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample(full=n % FULL_EVERY == 0))
            n += 1
            self._stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    def window(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if t0 <= s["t"] <= t1]


def _reduce(rows: list[dict[str, Any]], name: str, fn: Any) -> dict[str, float] | None:
    """fn over the samples of `name`, per measure (USS/PSS only from the samples that read them)."""
    values = [r[name] for r in rows if r.get(name)]
    if not values:
        return None
    keys = sorted({k for v in values for k in v})
    return {k: round(fn([v[k] for v in values if k in v]), 1) for k in keys}


def median_of(rows: list[dict[str, Any]], name: str) -> dict[str, float] | None:
    return _reduce(rows, name, statistics.median)


def max_of(rows: list[dict[str, Any]], name: str) -> dict[str, float] | None:
    return _reduce(rows, name, max)


def pid_of(state_dir: Path, name: str) -> int:
    text = (state_dir / "pids" / f"{name}.pid").read_text().split()
    return int(text[0])


def prefect_runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        while True:
            resp = client.post(f"{api}/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment_id]}}, "limit": 200, "offset": len(runs)})
            if resp.status_code in (429, 503):
                time.sleep(0.5)  # SQLite "database is locked": retried
                continue
            resp.raise_for_status()
            page = resp.json()
            runs += page
            if len(page) < 200:
                return runs


def receiver_metric(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=HTTP_TIMEOUT_S).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(what: str, check: Any, timeout_s: float, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last is True:
                return
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        time.sleep(interval_s)
    raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with h.state_dir("memory") as directory:
        routes = directory / "memory-routes.yaml"
        routes.write_text(ROUTES)
        t_up = time.monotonic()
        with h.full_sandbox(directory, {"K8S_RUNBOOKS_SANDBOX_RECEIVER_ROUTES": str(routes)}) as box:
            up_s = time.monotonic() - t_up
            print(f"sandbox up in {up_s:.0f} s ({directory})", flush=True)
            api = box.env["PREFECT_API_URL"]
            receiver_url = f"http://127.0.0.1:{box.env[h.PORT_SETTINGS['receiver']]}"
            token = (directory / "secrets" / "receiver-token").read_text().strip()
            deployment_id = httpx.get(f"{api}/deployments/name/pod-crash/pod-crash", timeout=HTTP_TIMEOUT_S).json()["id"]
            sampler = Sampler({name: pid_of(directory, name) for name in COMPONENTS})
            sampler.start()
            try:
                time.sleep(10.0)  # let start-up work (first polls, the fork server's imports, WAL checkpoints) settle
                t_rest = time.monotonic()
                time.sleep(args.rest)
                rest_window = (t_rest, time.monotonic())

                def storm(k: int) -> tuple[dict[str, Any], float]:
                    """Storm number k (0-based) with fingerprints of its own, until every run it started is final."""
                    load_out = directory / f"load-{k}.json"
                    cmd = [sys.executable, str(HERE / "_storm_load.py"), "--url", receiver_url, f"--token={token}",
                           "--out", str(load_out), "--notifications", str(args.notifications),
                           "--fingerprints", str(args.fingerprints), "--resolved-fraction", "0", "--concurrency", "8",
                           "--first-index", str(k * args.fingerprints)]
                    print(f"storm {k + 1}/{args.storms}: {args.notifications} notifications, {args.fingerprints} fingerprints "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
                    t0 = time.monotonic()
                    subprocess.run(cmd, cwd=h.REPO, timeout=600, check=False, stdout=subprocess.DEVNULL)
                    seconds = time.monotonic() - t0
                    if not load_out.exists():
                        raise BenchError("the load process wrote no results")
                    wait_for("every alert dispatched", lambda: receiver_metric(receiver_url, "k8s_runbooks_receiver_spool_depth") == 0,
                             timeout_s=300)
                    expected = (k + 1) * args.fingerprints

                    def all_final() -> Any:
                        runs = prefect_runs(api, deployment_id)
                        states = [(r.get("state") or {}).get("type") for r in runs]
                        return True if len(runs) >= expected and all(s in FINAL for s in states) else (len(runs), states.count(None))

                    wait_for(f"the {expected} runs to end", all_final, timeout_s=args.runs_timeout, interval_s=1.0)
                    return json.loads(load_out.read_text()), seconds

                def after() -> tuple[float, float]:
                    time.sleep(5.0)
                    t0 = time.monotonic()
                    time.sleep(args.rest)
                    return t0, time.monotonic()

                t_storm = time.monotonic()
                load, storm_s = storm(0)
                t_runs_done = time.monotonic()
                after_window = after()
                soak_windows = [after_window]
                for k in range(1, args.storms):  # --storms > 1: does memory come back after each storm, or grow?
                    more, _ = storm(k)
                    load["notifications"] += more["notifications"]
                    load["accepted"] += more["accepted"]
                    load.setdefault("errors", []).extend(more.get("errors", []))
                    soak_windows.append(after())
            finally:
                sampler.stop()
            runs = prefect_runs(api, deployment_id)
    during = sampler.window(t_storm, t_runs_done)
    rest_rows, after_rows = sampler.window(*rest_window), sampler.window(*after_window)
    names = [*COMPONENTS, "fork server"]
    processes = {}
    for name in names:
        label = COMPONENTS.get(name, name)
        processes[label] = {"rest": median_of(rest_rows, name), "peak": max_of(during, name), "after": median_of(after_rows, name)}
    soak = [{name: (median_of(sampler.window(*w), name) or {}).get("rss") for name in COMPONENTS}
            for w in soak_windows]
    run_peaks = list(sampler.runs.values())
    states: dict[str, int] = {}
    for r in runs:
        st = (r.get("state") or {}).get("type") or "?"
        states[st] = states.get(st, 0) + 1
    forked = {
        "runs_seen": len(run_peaks),
        "max_at_once": max((s["runs"]["count"] for s in during if s.get("runs")), default=0),
        "peak_per_run_mb": {k: round(max(p[k] for p in run_peaks if k in p), 1) for k in ("rss", "uss", "pss")
                            if any(k in p for p in run_peaks)},
        "median_peak_per_run_mb": {k: round(statistics.median(p[k] for p in run_peaks if k in p), 1)
                                   for k in ("rss", "uss", "pss") if any(k in p for p in run_peaks)},
        "runs_with_uss_sample": sum(1 for p in run_peaks if "uss" in p),
        "peak_all_runs_mb": max_of(during, "runs"),
    }
    checks = {
        "notifications": load["notifications"], "accepted": load["accepted"], "lost": load["notifications"] - load["accepted"],
        "runs_expected": args.storms * args.fingerprints, "runs_in_prefect": len(runs), "run_states": states,
        "samples": len(sampler.samples), "samples_rest": len(rest_rows), "samples_during": len(during),
        "samples_after": len(after_rows),
    }
    problems = []
    if checks["lost"]:
        problems.append(f"{checks['lost']} notifications not acknowledged: {load.get('errors', [])[:3]}")
    if len(runs) != checks["runs_expected"]:
        problems.append(f"{len(runs)} runs in Prefect, expected {checks['runs_expected']} (one per fingerprint)")
    missing = [n for n in processes if not processes[n]["rest"] or not processes[n]["peak"]]
    if missing:
        problems.append(f"no samples for {missing}")
    checks["problems"] = problems
    return {
        "sandbox_up_s": round(up_s, 1), "sample_interval_s": SAMPLE_S, "rest_window_s": args.rest,
        "storm": {"notifications": load["notifications"], "fingerprints": args.fingerprints,
                  "seconds": round(load["seconds"], 2), "accepted_per_second": round(load["accepted_per_second"] or 0, 1),
                  "storm_and_runs_s": round(t_runs_done - t_storm, 1), "load_process_s": round(storm_s, 1)},
        "processes_mb": processes, "forked_runs": forked, "checks": checks,
        "soak_rss_after_each_storm_mb": {COMPONENTS[name]: [row[name] for row in soak] for name in COMPONENTS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 notifications, 5 fingerprints (runs), 3 s windows")
    parser.add_argument("--out")
    parser.add_argument("--notifications", type=int, help="default 10,000 (--quick 2,000)")
    parser.add_argument("--fingerprints", type=int, help="= runbook runs started; default 20 (--quick 5)")
    parser.add_argument("--rest", type=float, help="seconds of the rest and after windows; default 5 (--quick 3)")
    parser.add_argument("--runs-timeout", type=float, default=600.0, help="max seconds for the runs to end")
    parser.add_argument("--storms", type=int, default=1,
                        help="storms in a row, each with new fingerprints (a soak): RSS after each is reported; default 1")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the sandbox
    args.notifications = args.notifications or (2_000 if args.quick else 10_000)
    args.fingerprints = args.fingerprints or (5 if args.quick else 20)
    args.rest = args.rest or (3.0 if args.quick else 5.0)
    load_start = os.getloadavg()[0]
    try:
        out = run(args)
    except (BenchError, RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        print(f"memory: failed: {exc}", file=sys.stderr)
        return 1
    data = {"benchmark": "memory", "quick": args.quick,
            "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}, **out}
    h.write_out(args.out, data)
    print(f"\nmemory (MB; rest / peak during the storm and its {args.fingerprints} runs / after), "
          f"load avg {load_start:.1f} → {os.getloadavg()[0]:.1f}")
    print(f"  {'process':<20}{'RSS':>22}{'USS':>22}{'PSS':>22}")
    for name, v in out["processes_mb"].items():
        cells = []
        for k in ("rss", "uss", "pss"):
            vals = [v[p].get(k) if v[p] else None for p in ("rest", "peak", "after")]
            cells.append(" / ".join("-" if x is None else f"{x:.0f}" for x in vals))
        print(f"  {name:<20}" + "".join(f"{c:>22}" for c in cells))
    f = out["forked_runs"]
    print(f"  forked runs: {f['runs_seen']} seen, at most {f['max_at_once']} at once; peak per run {f['peak_per_run_mb']}; "
          f"all runs together at peak {f['peak_all_runs_mb']}")
    if args.storms > 1:
        print(f"  RSS after each of {args.storms} storms (MB):")
        for name, values in out["soak_rss_after_each_storm_mb"].items():
            print(f"    {name:<20}" + " → ".join("-" if v is None else f"{v:.0f}" for v in values))
    for p in out["checks"]["problems"]:
        print(f"  PROBLEM: {p}")
    return 1 if out["checks"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
