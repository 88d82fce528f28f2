"""The alert-storm load process (started by bench/storm.py; runs on its own so its CPU is not the receiver's).

    python bench/_storm_load.py --url http://127.0.0.1:PORT --token T --out load.json
        [--notifications 10000] [--fingerprints 200] [--resolved-fraction 0.2] [--concurrency 8] [--seed 7]

Sends Alertmanager v4 webhook notifications (one alert each, so notifications/s = alerts/s) over
`--concurrency` HTTP/1.1 keep-alive connections, written and parsed by hand (a client library would spend
more CPU per request than the receiver does, on the same 2 cores). Ack latency is measured here, from the
first byte written to the last byte of the response read.

The plan (deterministic for a seed): every fingerprint first fires in the first 20% of the storm; a
`--resolved-fraction` of them resolve somewhere in 50-90% of it (three resolved notifications each, as
Alertmanager re-sends them); every other notification repeats a firing alert that has not resolved yet.
The JSON written to --out holds the plan's counts, per-status results, latency percentiles, a per-100 ms
timeline of accepted alerts, and per fingerprint how many notifications were acknowledged and when the
first resolved one was (wall clock), so the harness can check the receiver lost nothing and started no
runbook for an alert already resolved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

PATH = "/v1/alerts/alertmanager"
STARTS_AT = "2026-11-25T10:00:00Z"


@dataclass(frozen=True, slots=True)
class Notification:
    fingerprint: str
    status: str  # firing | resolved
    body: bytes


@dataclass
class Plan:
    notifications: list[Notification]
    firing_only: list[str]
    resolved: list[str]


def fingerprint(i: int) -> str:
    return f"{0x5701_0000_0000 + i:016x}"


def alert_body(fp: str, index: int, status: str, receiver: str = "runbooks") -> bytes:
    labels = {"alertname": "PodCrashLooping", "namespace": "storm", "deployment": f"svc-{index:03d}",
              "container": "app", "pod": f"svc-{index:03d}-5d8f7c9b4-x{index:03d}", "severity": "critical"}
    alert = {
        "status": status, "labels": labels,
        "annotations": {"summary": f"storm/svc-{index:03d} is restarting repeatedly", "runbook": "pod-crash"},
        "startsAt": STARTS_AT,
        "endsAt": "2026-11-25T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:19090/graph?g0.expr=storm", "fingerprint": fp,
    }
    payload = {
        "version": "4", "groupKey": f'{{}}:{{alertname="PodCrashLooping", deployment="svc-{index:03d}"}}',
        "truncatedAlerts": 0, "status": status, "receiver": receiver,
        "groupLabels": {"alertname": "PodCrashLooping", "deployment": f"svc-{index:03d}"},
        "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": "http://127.0.0.1:19093",
        "alerts": [alert],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def make_plan(total: int, fingerprints: int, resolved_fraction: float, seed: int, first_index: int = 0) -> Plan:
    rng = random.Random(seed)
    fps = [fingerprint(first_index + i) for i in range(fingerprints)]
    n_resolved = round(fingerprints * resolved_fraction)
    resolved = set(rng.sample(fps, n_resolved))
    resolve_repeats = 3
    repeats = total - fingerprints - resolve_repeats * n_resolved
    if repeats < 0:
        raise SystemExit(f"--notifications {total} is too few for {fingerprints} fingerprints and their resolutions")
    first = {fp: rng.uniform(0.0, 0.2) for fp in fps}
    end = {fp: (rng.uniform(0.5, 0.9) if fp in resolved else 1.0) for fp in fps}
    events: list[tuple[float, str, str]] = [(first[fp], fp, "firing") for fp in fps]
    for fp in resolved:
        events += [(end[fp] + k * 0.02, fp, "resolved") for k in range(resolve_repeats)]
    for _ in range(repeats):
        fp = rng.choice(fps)
        events.append((rng.uniform(first[fp], end[fp]), fp, "firing"))
    events.sort()
    index = {fp: first_index + i for i, fp in enumerate(fps)}
    bodies: dict[tuple[str, str], bytes] = {}
    out = []
    for _, fp, status in events:
        body = bodies.get((fp, status))
        if body is None:
            body = bodies[(fp, status)] = alert_body(fp, index[fp], status)
        out.append(Notification(fp, status, body))
    return Plan(out, sorted(set(fps) - resolved), sorted(resolved))


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # fingerprint -> 2xx acks
    first_resolved_ack: dict[str, float] = field(default_factory=dict)  # fingerprint -> wall clock
    ack_times: list[float] = field(default_factory=list)  # monotonic, for the timeline
    errors: list[str] = field(default_factory=list)


def request_bytes(host: str, token: str, body: bytes) -> bytes:
    head = (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Alertmanager/0.25.0\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def connection(host: str, port: int, token: str, queue: list[Notification], cursor: list[int],
                     results: Results, timeout: float) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    hostport = f"{host}:{port}"
    try:
        while cursor[0] < len(queue):
            item = queue[cursor[0]]
            cursor[0] += 1
            data = request_bytes(hostport, token, item.body)
            started = time.perf_counter()
            for attempt in range(2):
                try:
                    writer.write(data)
                    status, body = await asyncio.wait_for(read_response(reader), timeout)
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    # The server closed the keep-alive connection between requests: reconnect once and resend
                    # (a webhook is safe to resend: the receiver deduplicates).
                    writer.close()
                    if attempt:
                        results.errors.append(f"{item.fingerprint}: {type(exc).__name__}: {exc}")
                        status, body = 0, b""
                        break
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            elapsed = time.perf_counter() - started
            key = str(status)
            results.status[key] = results.status.get(key, 0) + 1
            if 200 <= status < 300:
                results.latencies.append(elapsed)
                results.ack_times.append(time.monotonic())
                results.acked[item.fingerprint] = results.acked.get(item.fingerprint, 0) + 1
                for entry in json.loads(body).get("alerts", []):
                    results.outcomes[entry["outcome"]] = results.outcomes.get(entry["outcome"], 0) + 1
                if item.status == "resolved":
                    results.first_resolved_ack.setdefault(item.fingerprint, time.time())
            elif status:
                results.errors.append(f"{item.fingerprint}: HTTP {status}: {body[:200]!r}")
    finally:
        writer.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def storm(url: str, token: str, plan: Plan, concurrency: int, timeout: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results = Results()
    cursor = [0]
    wall_started = time.time()
    started = time.monotonic()
    tasks = [asyncio.create_task(connection(host, port, token, plan.notifications, cursor, results, timeout))
             for _ in range(concurrency)]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    took = time.monotonic() - started
    for outcome in done:
        if isinstance(outcome, BaseException):
            results.errors.append(f"connection failed: {type(outcome).__name__}: {outcome}")
    timeline: dict[int, int] = {}
    for t in results.ack_times:
        slot = int((t - started) * 10)
        timeline[slot] = timeline.get(slot, 0) + 1
    per_second = [sum(timeline.get(s, 0) for s in range(i * 10, i * 10 + 10)) for i in range(int(took) + 1)]
    accepted = len(results.latencies)
    ms = [x * 1000 for x in results.latencies]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "notifications": len(plan.notifications), "alerts_per_notification": 1,
        "fingerprints": len(plan.firing_only) + len(plan.resolved),
        "firing_only_fingerprints": plan.firing_only, "resolved_fingerprints": plan.resolved,
        "sent_per_fingerprint": _count(n.fingerprint for n in plan.notifications),
        "resolved_notifications": sum(1 for n in plan.notifications if n.status == "resolved"),
        "concurrency": concurrency, "started_at": wall_started, "seconds": took,
        "load_process_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "accepted": accepted, "accepted_per_second": accepted / took if took else None,
        "status": results.status, "outcomes": results.outcomes, "errors": results.errors[:50],
        "error_count": len(results.errors),
        "ack_ms": {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
                   "p999": percentile(ms, 99.9), "max": max(ms) if ms else None,
                   "mean": sum(ms) / len(ms) if ms else None},
        "accepted_per_100ms": [timeline.get(s, 0) for s in range(int(took * 10) + 1)],
        "accepted_per_second_timeline": per_second,
        "acked_per_fingerprint": results.acked,
        "first_resolved_ack": results.first_resolved_ack,
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--fingerprints", type=int, default=200)
    parser.add_argument("--resolved-fraction", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first-index", type=int, default=0,
                        help="number the alerts from here: a second storm with new fingerprints starts new runs")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = parser.parse_args()
    plan = make_plan(args.notifications, args.fingerprints, args.resolved_fraction, args.seed, args.first_index)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(storm(args.url, args.token, plan, args.concurrency, args.timeout))
    else:
        result = uvloop.run(storm(args.url, args.token, plan, args.concurrency, args.timeout))
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print(f"load: {result['accepted']}/{result['notifications']} accepted in {result['seconds']:.2f} s "
          f"({result['accepted_per_second']:.0f}/s), ack p50 {result['ack_ms']['p50']:.1f} ms, "
          f"p99 {result['ack_ms']['p99']:.1f} ms, errors {result['error_count']}", flush=True)
    return 0 if result["error_count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
