"""Post-mortem assembly for a run with 100 artifacts (target: ≤ 1 s for assembly + Markdown + HTML).

    .venv/bin/python bench/postmortem_assembly.py [--quick] [--out FILE] [--artifacts 100] [--repeats 9]

Starts the sandbox's Prefect server on a free port, runs a real flow (with a subflow, as the incident
response dispatches a runbook) that publishes the kinds of artifacts our flows publish — the run record
re-published after every step (growing, with log evidence), pod tables, evidence/plan/status markdown,
Sentry links, the runbook text and a progress bar — then times `assemble` + `render_markdown` +
`render_html` several times in a fresh client each time, as the CLI's `k8s-runbooks postmortem` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import _harness as h

LOG_LINES = 50  # lines of previous-container log per evidence item, as the pod-crash flow keeps


def _record(flow: str, version: int, now: Any) -> Any:
    """The run record as it stands after `version` saves: each step adds notes, findings and evidence."""
    from k8s_runbooks.models import Action, ActionKind, ActionResult, Decision, Finding, Severity, WorkloadRef
    from k8s_runbooks.postmortem.model import EvidenceItem, RunRecord

    record = RunRecord(flow=flow, runbook_title="Pod Crash in a Kubernetes Deployment", namespace="shop",
                       deployment="checkout", approval_mode="auto", outcome="in-progress",
                       impact="3 of 3 replicas of shop/checkout crashing; 0 of 3 ready at detection")
    record.note("Runbook started", "approval=auto", at=now)
    for i in range(version):
        at = now + timedelta(seconds=i)
        record.note(f"Step {i} started", at=at)
        pod = f"checkout-7d9f8c6b5-{i:05d}"
        record.findings.append(Finding(step="identify", title=f"Error exit 1: last log line \"panic: ledger\" ({pod}/shop)",
                                       severity=Severity.critical, detail="4 restarts",
                                       evidence={"kind": "crash_error", "pod": pod, "container": "shop", "exit_code": 1}))
        log = "\n".join(f"2026-11-25T10:00:{n:02d}Z INFO request {n} handled in {n * 3} ms" for n in range(LOG_LINES - 1))
        record.evidence.append(EvidenceItem(step="identify", title=f"Previous log of {pod}/shop", kind="log",
                                            content=log + "\npanic: checkout cannot reach the ledger"))
    if version > 2:
        action = Action(kind=ActionKind.rollout_undo, target=WorkloadRef(namespace="shop", name="checkout"),
                        reason="the crashes began with the current revision")
        record.actions.append(ActionResult(action=action, decision=Decision.allowed, executed=True, detail="rolled back"))
        record.note("Action allowed: roll back", kind="action", at=now + timedelta(seconds=version))
    return record


def _flows() -> tuple[Any, Any]:
    from prefect import flow
    from prefect.runtime import flow_run as runtime_flow_run

    from flows.artifacts import Progress, artifact_key, publish_link, publish_markdown, publish_raw_markdown, publish_table
    from k8s_runbooks.models import utcnow
    from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir

    def publish(flow: str, count: int, records: int) -> None:
        """`count` artifacts in all: `records` run-record versions, the runbook, then the other kinds in turn."""
        now = utcnow()
        runbook = load_runbook(runbooks_dir() / "pod-crash.md")
        publish_raw_markdown(artifact_key(flow, "runbook"), runbook.markdown, "The human runbook")
        progress = Progress(artifact_key(flow, "progress"), ["identify", "contain", "recover", "verify", "communicate"])
        made = 2
        for version in range(1, records + 1):
            publish_raw_markdown(artifact_key(flow, "record"), _record(flow, version, now).to_markdown(), "run record")
            made += 1
        kinds = ["table", "markdown", "link", "markdown"]
        i = 0
        while made < count:
            kind = kinds[i % len(kinds)]
            if kind == "table":
                rows = [{"pod": f"checkout-{i}-{n}", "phase": "Running", "ready": False, "restarts": n,
                         "unhealthy": True, "reasons": "container shop is waiting in CrashLoopBackOff"} for n in range(10)]
                publish_table(artifact_key(flow, "identify", "pods", str(i)), rows, "Pods of shop/checkout")
            elif kind == "link":
                publish_link(artifact_key(flow, "identify", "sentry", str(i)), f"http://sentry.local/issues/{i}", f"Sentry {i}")
            else:
                publish_markdown(artifact_key(flow, "identify", "evidence", str(i)),
                                 f"# Evidence {i}\n\n```text\n" + "log line\n" * 40 + "```\n", "Evidence")
            if i % 10 == 0:
                progress.start("identify")
            made += 1
            i += 1

    @flow(name="bench-pod-crash")
    def child(count: int, records: int) -> None:
        publish("bench-pod-crash", count, records)

    @flow(name="bench-incident")
    def parent(count: int, child_count: int, records: int) -> str:
        publish("bench-incident", count - child_count, records)
        child(child_count, records)
        return str(runtime_flow_run.id)

    return parent, child


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _assemble_and_render(run_id: str) -> tuple[float, float, float, float, int, int]:
    from prefect.client.orchestration import get_client

    from k8s_runbooks_prefect.postmortem.assemble import assemble
    from k8s_runbooks.postmortem.render import render_html, render_markdown

    t0, c0 = time.perf_counter(), _cpu()
    async with get_client() as client:
        pm = await assemble(run_id, client)
    t1 = time.perf_counter()
    markdown = render_markdown(pm)
    t2 = time.perf_counter()
    html = render_html(pm, markdown)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, _cpu() - c0, len(markdown), len(html)


def _count_artifacts(run_ids: list[str]) -> int:
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return len(client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(r) for r in run_ids])), limit=200))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--artifacts", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--prefect-api", help="use this running Prefect API instead of starting a server")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    records = 12  # a run saves its record after each of ~6 steps, twice with a subflow
    child_count = 20
    with h.state_dir("postmortem") as directory:
        t_server = time.monotonic()
        with h.prefect_server(directory, existing=args.prefect_api) as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
            print(f"Prefect server up in {time.monotonic() - t_server:.1f} s at {api_url}", flush=True)
            parent, _child = _flows()
            t_pub = time.monotonic()
            run_id = parent(args.artifacts, child_count, records // 2)
            publish_s = time.monotonic() - t_pub
            from prefect import get_client
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

            with get_client(sync_client=True) as client:
                subs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
            stored = _count_artifacts([run_id] + [str(s.id) for s in subs])
            print(f"run {run_id}: {stored} artifacts (incl. subflow) published in {publish_s:.1f} s", flush=True)
            rounds = []
            for n in range(repeats):
                a, m, ht, cpu, md_len, html_len = asyncio.run(_assemble_and_render(run_id))
                total = a + m + ht
                rounds.append({"assemble_s": round(a, 4), "markdown_s": round(m, 4), "html_s": round(ht, 4),
                               "total_s": round(total, 4), "client_cpu_s": round(cpu, 4)})
                print(f"  round {n + 1}: assemble {a * 1000:.0f} ms, markdown {m * 1000:.0f} ms, "
                      f"html {ht * 1000:.0f} ms, total {total * 1000:.0f} ms (CPU of this process {cpu * 1000:.0f} ms; "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
    totals = [r["total_s"] for r in rounds]
    result = {
        "artifacts": stored, "record_versions": records, "repeats": repeats, "rounds": rounds,
        "total_s": h.summary(totals), "assemble_s": h.summary([r["assemble_s"] for r in rounds]),
        "render_s": h.summary([r["markdown_s"] + r["html_s"] for r in rounds]),
        "client_cpu_s": h.summary([r["client_cpu_s"] for r in rounds]),
        "markdown_chars": md_len, "html_chars": html_len, "target_s": 1.0,
        "meets_target": max(totals) <= 1.0,
    }
    h.write_out(args.out, result)
    s = result["total_s"]
    print(f"post-mortem assembly, {stored} artifacts: median {s['median'] * 1000:.0f} ms, max {s['max'] * 1000:.0f} ms "
          f"over {repeats} rounds (target ≤ 1000 ms: {'met' if result['meets_target'] else 'MISSED'}); "
          f"load avg {h.machine()['load_avg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
