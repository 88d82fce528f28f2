"""Rendering a hand-built PostMortem: the seed's sections, and evidence that cannot inject markup."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from k8s_runbooks.models import Finding, TimelineEntry
from k8s_runbooks.postmortem.analysis import analyse
from k8s_runbooks.postmortem.model import EvidenceItem, PostMortem, RunRecord
from k8s_runbooks.postmortem.render import render_html, render_markdown

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=timezone.utc)
EVIL = '<script>alert("x")</script> panic: ```` broke </pre> [link](javascript:alert(1))'


def _pm() -> PostMortem:
    return PostMortem(
        title="Pod crash — shop/checkout",
        flow_run_id="1f0c7a1e-0000-0000-0000-000000000001",
        flow_run_name="brave-otter",
        final_state="Completed",
        date=T0,
        duration=timedelta(minutes=4, seconds=12),
        impact="3 of 3 replicas of shop/checkout crashing",
        summary="checkout crashed after a rollout; rolled back.",
        timeline=[
            TimelineEntry(at=T0, event="Crash detected", kind="detected"),
            TimelineEntry(at=T0 + timedelta(seconds=30), event="Approved by alice: rollout_undo", kind="approval"),
            TimelineEntry(at=T0 + timedelta(seconds=31), event="Action allowed: roll back", detail=EVIL, kind="action"),
            TimelineEntry(at=T0 + timedelta(seconds=90), event="Recovered", kind="recovered"),
        ],
        root_cause=["Container shop exited with code 1; last log line: " + EVIL],
        actions_taken=["10:00:31 roll back shop/deployment/checkout — allowed, executed"],
        lessons_learned=["Canary analysis would have stopped it."],
        action_items=["Fix the code path", "Add canary analysis"],
        evidence=[EvidenceItem(title="Previous log of checkout-abc/shop", kind="log", content="line 1\n" + EVIL)],
    )


def test_markdown_has_the_seed_sections_in_order() -> None:
    md = render_markdown(_pm())
    headings = ["Incident Title", "Date", "Duration", "Impact", "## Incident Summary", "## Timeline",
                "## Root Cause Analysis", "## Actions Taken", "## Lessons Learned", "## Action Items", "## Evidence"]
    positions = [md.index(h) for h in headings]
    assert positions == sorted(positions)
    assert "4 min 12 s" in md
    assert "1. Fix the code path\n2. Add canary analysis" in md
    timeline = md[md.index("## Timeline"):md.index("## Root Cause")]
    assert timeline.index("Crash detected") < timeline.index("Approved by alice") < timeline.index("Recovered")


def test_html_escapes_markup_from_evidence() -> None:
    page = render_html(_pm())
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert 'href="javascript' not in page
    assert "</pre> [link]" not in page  # the early </pre> in the log line is text, not a tag
    for section in ("Incident Summary", "Timeline", "Root Cause Analysis", "Action Items", "Evidence"):
        assert f">{section}</h2>" in page


def test_evidence_with_backtick_fences_stays_inside_its_code_block() -> None:
    md = render_markdown(_pm())
    page = render_html(_pm(), md)
    body = page.split("Previous log of checkout-abc/shop")[1]
    assert body.index("<pre><code") < body.index("panic:") < body.index("</code></pre>")


def test_analysis_turns_findings_into_root_cause_and_action_items() -> None:
    record = RunRecord(flow="pod-crash", namespace="shop", deployment="checkout", outcome="resolved", findings=[
        Finding(step="identify", title="OOMKilled", evidence={"kind": "oom", "container": "shop", "memory_limit": "128Mi", "exit_code": 137}),
        Finding(step="identify", title="Error exit 1", evidence={"kind": "crash_error", "container": "shop", "exit_code": 1, "last_log_line": "boom: db down"}),
        Finding(step="identify", title="Sentry", evidence={"kind": "sentry_issue", "short_id": "SHOP-1", "permalink": "http://sentry/1"}),
        Finding(step="identify", title="Rollout", evidence={"kind": "bad_rollout", "revision": 4, "replicaset": "checkout-b", "previous_replicaset": "checkout-a", "created_at": "t"}),
    ])
    causes, items, lessons = analyse(record)
    text = " ".join(causes + items)
    assert "OOMKilled" in text and "128Mi" in text
    assert any("memory alert" in i for i in items)
    assert any('Fix the code path that logs "boom: db down"' in i for i in items)
    assert any("SHOP-1" in i and "http://sentry/1" in i for i in items)
    assert any("canary analysis" in i for i in items)
    assert any("revision 4" in c for c in causes)
    assert lessons


def test_run_record_round_trips_through_markdown_even_with_backticks() -> None:
    record = RunRecord(flow="pod-crash", evidence=[EvidenceItem(title="log", content="```\nnot the end\n```")])
    record.note("Crash detected", "x ``` y", "detected")
    again = RunRecord.from_markdown(record.to_markdown())
    assert again == record
    assert RunRecord.from_markdown("no record here") is None


def test_status_update_templates_name_the_kind_target_and_actions() -> None:
    from k8s_runbooks.communicate import StatusUpdate, render_status_update

    text = render_status_update(StatusUpdate(kind="escalated", target="shop/checkout", summary="approval timed out",
                                             actions=[], drill=True, run_url="http://prefect/runs/1"))
    assert text.startswith("*:sos: Incident escalated") and "[DRILL]: shop/checkout" in text
    assert "*Actions taken*: none" in text and "must take over" in text and "http://prefect/runs/1" in text
    resolved = render_status_update(StatusUpdate(kind="resolved", target="shop/checkout", summary="ok",
                                                 actions=["roll back shop/deployment/checkout"]))
    assert "Incident resolved" in resolved and "- roll back shop/deployment/checkout" in resolved


def test_alerts_section_lists_every_alert_and_cannot_break_the_table() -> None:
    from k8s_runbooks.postmortem.model import IncidentAlert

    pm = _pm().model_copy(update={"alerts": [
        IncidentAlert(role="opened", alertname="PodCrashLooping", source="alertmanager", status="resolved",
                      labels="container=shop, namespace=shop"),
        IncidentAlert(role="joined", alertname="Evil | <b>x</b>", source="grafana", status="firing", labels=EVIL),
    ]})
    markdown = render_markdown(pm)
    section = markdown[markdown.index("## Alerts"):markdown.index("## Timeline")]
    assert "2 alert(s) opened or joined this incident (1 joined" in section
    rows = [line for line in section.splitlines() if line.startswith("| opened") or line.startswith("| joined")]
    assert len(rows) == 2 and all(row.count(" | ") == 8 for row in rows)  # 9 cells each: no pipe escaped the table
    html = render_html(pm)
    assert "<b>x</b>" not in html and "<script>" not in html
    assert "## Alerts" not in render_markdown(_pm())  # no alerts recorded (a run started by hand): no section
