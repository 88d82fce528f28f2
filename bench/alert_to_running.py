"""Alert → runbook RUNNING: from the receiver accepting an Alertmanager webhook to the flow run entering RUNNING.

    .venv/bin/python bench/alert_to_running.py [--quick] [--out FILE] [--alerts 50] [--variants ...]

Starts a Prefect server (src/k8s_runbooks/sandbox/prefect_server.py, fresh SQLite) and the alert receiver on
free ports, then for each runner variant starts `python -m k8s_runbooks_prefect.deploy serve` and sends alerts one at
a time (a new fingerprint each, routed to pod-crash/pod-crash in dry-run on a namespace that does not exist,
so the runbook fails fast once started; only the start matters). Per alert:

    sent (client clock, before the POST; an upper bound of "accepted") → created → PENDING → RUNNING
    (server timestamps of the run's state history; same machine clock)

Variants: `stock-default` (Prefect's Runner with Prefect's default 10 s polling), `stock-1s` (the previous
sandbox setup), `warm-poll-1s` (warm fork-server runner, polling only), `warm-nudge` (warm + poll at once on the
prefect.flow-run.Scheduled event; the sandbox default). The next alert is sent once the previous run is
final (or `--settle` seconds after it started) plus a random 0.1–0.6 s, so alerts fall at random phases of
the poll loop.

Default sizes (30 warm-nudge alerts, 12 warm-poll-1s, 10 stock-1s, 5 stock-default; settle 1 s) keep the
whole `make bench` under 15 minutes on 2 idle cores (~4 min for this one); `--alerts N` sets every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
HTTP_TIMEOUT_S = 10.0
VARIANTS: dict[str, list[str]] = {
    "stock-default": ["--runner", "stock", "--query-seconds", "10"],  # PREFECT_RUNNER_POLL_FREQUENCY default
    "stock-1s": ["--runner", "stock", "--query-seconds", "1"],
    "warm-poll-1s": ["--runner", "warm", "--query-seconds", "1", "--no-nudge"],
    "warm-nudge": ["--runner", "warm", "--query-seconds", "1"],
}
QUICK_VARIANTS = ["stock-1s", "warm-nudge"]
# Alerts per variant within `make bench`'s 15-minute budget: the sandbox default gets the most; Prefect's default
# 10 s polling costs ~9 s per alert. --alerts overrides them all.
DEFAULT_ALERTS = {"warm-nudge": 30, "warm-poll-1s": 12, "stock-1s": 10, "stock-default": 5}
SPACING_S = (0.1, 0.6)  # default random pause before the next alert, on top of --settle (--spacing)
ROUTES = """version: 1
routes:
  - name: bench
    sources: [alertmanager]
    match: {alertname: BenchAlertToRunning}
    deployment: pod-crash/pod-crash
    approval: dry-run
    parameters:
      params: {namespace: "{labels.namespace}", deployment: "{labels.deployment}", approval: "{approval}",
               verify_timeout_seconds: 0, notes: "bench alert {fingerprint}"}
"""


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def excerpt(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""


def start(name: str, cmd: list[str], env: dict[str, str], work: Path) -> Proc:
    log = work / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return Proc(name, popen, log)


def wait_until(what: str, check: Any, proc: Proc | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited while waiting for {what}:\n{proc.excerpt()}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.3)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}" + (f":\n{proc.excerpt()}" if proc else ""))


def base_env(api_url: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "K8S_RUNBOOKS_")) and k not in ("KUBECONFIG",)}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(work / "client"), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO),
               # No cluster: the runbook fails fast right after it started (the start is what is measured).
               K8S_RUNBOOKS_KUBECONFIG=str(work / "no-kubeconfig"), K8S_RUNBOOKS_STATE_DIR=str(work / "runbooks"),
               K8S_RUNBOOKS_REPORTS_DIR=str(work / "reports"))
    return env


def start_prefect(work: Path) -> tuple[Proc, str]:
    port = free_port()
    home = work / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_UI_ENABLED="false")
    proc = start("prefect", [PY, "-m", "k8s_runbooks.sandbox.prefect_server", "--host", "127.0.0.1", "--port", str(port)],
                 env, work)
    url = f"http://127.0.0.1:{port}/api"
    wait_until("the Prefect API", lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, proc, 300)
    return proc, url


def start_receiver(api_url: str, work: Path) -> tuple[Proc, str]:
    port = free_port()
    routes = work / "routes.yaml"
    routes.write_text(ROUTES)
    proc = start("receiver", [PY, "-m", "k8s_runbooks_prefect.alerts.server", "--host", "127.0.0.1", "--port", str(port),
                              "--routes", str(routes), "--spool", str(work / "spool.sqlite3")],
                 base_env(api_url, work), work)
    url = f"http://127.0.0.1:{port}"
    wait_until("the receiver", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, proc, 120)
    return proc, url


def start_runner(variant: str, api_url: str, work: Path) -> Proc:
    ready = work / f"{variant}.ready"
    ready.unlink(missing_ok=True)
    proc = start(f"runner-{variant}", [PY, "-m", "k8s_runbooks_prefect.deploy", "serve", *VARIANTS[variant],
                                       "--name", f"bench-{variant}", "--ready-file", str(ready)],
                 base_env(api_url, work), work)
    wait_until(f"runner {variant} to register the deployments", ready.exists, proc, 300)
    return proc


def payload(fingerprint: str, workload: str) -> dict[str, Any]:
    starts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    alert = {"status": "firing", "labels": {"alertname": "BenchAlertToRunning", "namespace": "bench-none",
                                            "deployment": workload, "severity": "critical"},
             "annotations": {"summary": "bench"}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://127.0.0.1/bench", "fingerprint": fingerprint}
    return {"receiver": "runbooks", "status": "firing", "alerts": [alert], "groupLabels": {}, "commonLabels": alert["labels"],
            "commonAnnotations": {}, "externalURL": "http://127.0.0.1/bench", "version": "4",
            "groupKey": f"{{}}:{{fingerprint=\"{fingerprint}\"}}", "truncatedAlerts": 0}


@dataclass
class Sample:
    workload: str
    sent: float
    acked: float
    created: float | None = None
    pending: float | None = None
    running: float | None = None
    error: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.running is None else self.running - self.sent


def find_run(client: Any, deployment_id: Any, workload: str, since: float) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=10)
    for run in runs:
        if run.created and run.created.timestamp() >= since - 5 and run.parameters.get("params", {}).get("deployment") == workload:
            return run
    return None


def measure_alert(client: Any, deployment_id: Any, receiver: str, variant: str, i: int, settle_s: float,
                  timeout_s: float) -> Sample:
    from prefect.client.schemas.objects import StateType

    workload = f"b-{variant}-{i}-{uuid.uuid4().hex[:6]}"
    body = payload(uuid.uuid4().hex[:16], workload)
    sent = time.time()
    resp = httpx.post(f"{receiver}/v1/alerts/alertmanager", json=body, timeout=HTTP_TIMEOUT_S)
    sample = Sample(workload, sent, time.time())
    if resp.status_code != 200:
        sample.error = f"receiver answered {resp.status_code}: {resp.text[:200]}"
        return sample
    deadline = time.monotonic() + timeout_s
    run = None
    while time.monotonic() < deadline:
        run = run or find_run(client, deployment_id, workload, sent)
        if run is not None:
            run = client.read_flow_run(run.id)
            if run.state is not None and (run.state.type == StateType.RUNNING or run.state.is_final()):
                break
        time.sleep(0.1)
    else:
        sample.error = "no run created" if run is None else f"not RUNNING within {timeout_s:.0f}s ({run.state.name})"
        return sample
    states = client.read_flow_run_states(run.id)
    sample.created = run.created.timestamp()
    for state in states:
        if state.type == StateType.PENDING and sample.pending is None:
            sample.pending = state.timestamp.timestamp()
        if state.type == StateType.RUNNING and sample.running is None:
            sample.running = state.timestamp.timestamp()
    if sample.running is None:
        sample.error = f"never RUNNING (ended {run.state.name})"
    settle_until = time.monotonic() + settle_s
    while time.monotonic() < settle_until and not client.read_flow_run(run.id).state.is_final():
        time.sleep(0.2)
    return sample


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.latency is not None]
    out: dict[str, Any] = {"alerts": len(samples), "measured": len(ok), "errors": [s.error for s in samples if s.error]}
    if not ok:
        return out
    lat = [s.latency for s in ok if s.latency is not None]
    out.update({f"p{int(q * 100)}_s": round(pct(lat, q), 3) for q in (0.5, 0.95, 0.99)})
    out.update(min_s=round(min(lat), 3), max_s=round(max(lat), 3), mean_s=round(statistics.fmean(lat), 3))
    stages = {
        "accept_to_created": [s.created - s.sent for s in ok if s.created],
        "created_to_pending": [s.pending - s.created for s in ok if s.pending and s.created],
        "pending_to_running": [s.running - s.pending for s in ok if s.running and s.pending],
    }
    out["stages_p50_s"] = {k: round(pct(v, 0.5), 3) for k, v in stages.items() if v}
    out["stages_p95_s"] = {k: round(pct(v, 0.95), 3) for k, v in stages.items() if v}
    out["ack_p99_ms"] = round(pct([(s.acked - s.sent) * 1000 for s in samples], 0.99), 1)
    return out


def run_variant(variant: str, alerts: int, api_url: str, receiver: str, work: Path, settle_s: float,
                spacing_s: tuple[float, float] = SPACING_S) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    load_before = os.getloadavg()[0]
    runner = start_runner(variant, api_url, work)
    samples: list[Sample] = []
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployment_id = client.read_deployment_by_name("pod-crash/pod-crash").id
            time.sleep(2.0)  # let the runner's first poll and subscription settle
            for i in range(alerts):
                sample = measure_alert(client, deployment_id, receiver, variant, i, settle_s, timeout_s=180)
                samples.append(sample)
                shown = f"{sample.latency:.2f} s" if sample.latency is not None else f"error: {sample.error}"
                print(f"  {variant} #{i + 1}/{alerts}: {shown}", flush=True)
                time.sleep(random.uniform(*spacing_s))
    finally:
        runner.stop()
    result = summarise(samples)
    result.update(runner_args=VARIANTS[variant], spacing_s=list(spacing_s), load_avg_1m_before=round(load_before, 2),
                  load_avg_1m_after=round(os.getloadavg()[0], 2), samples=[asdict(s) for s in samples])
    return result


def write_figures(out: Path | None, quick: bool, settle_s: float, results: dict[str, Any]) -> None:
    if out is None:
        return
    figures = {"benchmark": "alert_to_running", "quick": quick, "settle_s": settle_s,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m_end": os.getloadavg()[0]},
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "targets": {"p50_s": 1.0, "p99_s": 2.0},
               "variants": results}
    out.write_text(json.dumps(figures, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"3 alerts, variants {', '.join(QUICK_VARIANTS)}")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--alerts", type=int, help="alerts per variant (default: warm-nudge 30, warm-poll-1s 12, "
                                                   "stock-1s 10, stock-default 5; --quick 3)")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="default: all (--quick: two)")
    parser.add_argument("--settle", type=float, default=1.0, help="max seconds to let a started run finish before the next alert")
    parser.add_argument("--spacing", type=float, nargs=2, default=list(SPACING_S), metavar=("MIN", "MAX"),
                        help="random pause before the next alert, seconds (default %(default)s)")
    parser.add_argument("--prefect-api-url", help="use this running Prefect server instead of starting one")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started (finally below)

    def alerts_for(variant: str) -> int:
        return args.alerts or (3 if args.quick else DEFAULT_ALERTS.get(variant, 50))

    variants = args.variants or (QUICK_VARIANTS if args.quick else list(VARIANTS))
    work = Path(tempfile.mkdtemp(prefix="bench-alert-to-running-"))
    procs: list[Proc] = []
    results: dict[str, Any] = {}
    try:
        if args.prefect_api_url:
            api_url = args.prefect_api_url
        else:
            server, api_url = start_prefect(work)
            procs.append(server)
        receiver, receiver_url = start_receiver(api_url, work)
        procs.append(receiver)
        for variant in variants:
            print(f"== {variant} ({' '.join(VARIANTS[variant])}): {alerts_for(variant)} alerts", flush=True)
            results[variant] = run_variant(variant, alerts_for(variant), api_url, receiver_url, work, args.settle,
                                           tuple(args.spacing))
            write_figures(args.out, args.quick, args.settle, results)  # a long run interrupted keeps what it measured
    except BenchError as exc:
        print(f"error: {exc} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
    print("\nalert accepted → runbook RUNNING (server timestamps)")
    print(f"{'variant':<15}{'n':>4}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   stages p50 (created / pending / running)")
    for variant, res in results.items():
        if "p50_s" not in res:
            print(f"{variant:<15}{res['measured']:>4}   no measurement: {res['errors'][:1]}")
            continue
        st = res["stages_p50_s"]
        print(f"{variant:<15}{res['measured']:>4}{res['p50_s']:>8.2f}{res['p95_s']:>8.2f}{res['p99_s']:>8.2f}"
              f"{res['max_s']:>8.2f}   {st.get('accept_to_created', 0):.2f} / {st.get('created_to_pending', 0):.2f} / "
              f"{st.get('pending_to_running', 0):.2f}")
    write_figures(args.out, args.quick, args.settle, results)
    failed = [v for v, r in results.items() if r.get("measured", 0) == 0]
    if failed:
        print(f"no measurement for {', '.join(failed)}; logs kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)  # Prefect database and logs: only worth keeping when something failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
