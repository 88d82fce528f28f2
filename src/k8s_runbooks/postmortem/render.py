"""Render a PostMortem as Markdown (the seed's structure) and as HTML via markdown-it-py.

Evidence is untrusted text (log lines, event messages). Markdown escapes inline text and fences code
with a fence longer than any backtick run inside it; the HTML renderer runs with `html=False`, so raw
HTML from evidence is escaped instead of interpreted.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from markdown_it import MarkdownIt

from k8s_runbooks.postmortem.model import ChartRef, PostMortem

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&])")
# A list marker, thematic break or setext underline at the start of the text: it follows "- " or starts a
# line in the report, where "1. x", "- x" or "---" would open a list or draw a rule.
_BLOCK_START = re.compile(r"^(\d{1,9})([.)])|^([-+=])")


def md_text(text: str) -> str:
    """Inline Markdown text that renders literally (CommonMark backslash escapes), on one line.

    `&` is escaped too: "&lt;" must show as typed, not as the character it names."""
    escaped = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return _BLOCK_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", escaped)


def md_code_block(text: str, info: str = "text") -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def _when(pm: PostMortem, at) -> str:  # type: ignore[no-untyped-def]
    return at.strftime("%H:%M:%S")


def _chart_src(chart: ChartRef, base_dir: Path | None, inline: bool) -> str | None:
    """Where the image comes from: a data: URI (self-contained HTML), a path relative to the report, or
    the stored path; None when the file is gone."""
    path = Path(chart.path)
    try:  # the path comes from an artifact: too long, unreadable or gone is "missing", never a failed report
        if not path.is_file():
            return None
        if inline:
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None
    if base_dir is not None:
        return Path(os.path.relpath(path.resolve(), base_dir.resolve())).as_posix()
    return path.as_posix()


def _charts_section(pm: PostMortem, base_dir: Path | None, inline: bool) -> list[str]:
    out = ["## Charts\n"]
    for chart in pm.charts:
        src = _chart_src(chart, base_dir, inline)
        if src is None:
            out.append(f"- {md_text(chart.title)}: chart file missing ({md_text(chart.path)})\n")
            continue
        table = f" (data: table artifact `{chart.table_key}`)" if chart.table_key else ""
        out.append(f"### {md_text(chart.title)}\n\n![{md_text(chart.title)}](<{src}>){table}\n")
    return out


def _ranked_causes(pm: PostMortem) -> list[str]:
    """The diagnosis as the engine ranked it: each cause, its confidence and the facts it rests on, and what
    answers it (the action taken or the exact change escalated)."""
    if not pm.ranked_causes:
        return []
    steps = {(s.cause, s.object.name): s for s in pm.plan}
    out = ["Ranked causes (most likely first), each with the evidence it rests on"
           + (f" (snapshot artifact `{md_text(pm.snapshot_key)}`; replay: `k8s-runbooks diagnose --snapshot FILE`)" if pm.snapshot_key else "")
           + ":\n"]
    for i, h in enumerate(pm.ranked_causes[:5], start=1):
        out.append(f"{i}. **{md_text(h.cause.value)}** on {md_text(h.object.kind)}/{md_text(h.object.name)} "
                   f"(layer {h.layer.value}, confidence {h.confidence:.2f}): {md_text(h.summary)}")
        out.extend(f"   - evidence [{f.source}] {md_text(f.ref)}: {md_text(f.text)}" for f in h.facts)
        step = steps.get((h.cause, h.object.name))
        if step is not None and step.action is not None:
            out.append(f"   - answer: {md_text(step.action.describe())} ({md_text(step.action.reason)})")
        elif step is not None and step.escalation is not None:
            out.append(f"   - escalated: {md_text(step.escalation.summary)}; change: `{md_text(step.escalation.change.splitlines()[0])}`")
    out.append("")
    return out


def _alerts_section(pm: PostMortem) -> list[str]:
    """Every alert that opened or joined the incident: one incident per workload, however many alerts it raised."""
    joined = sum(1 for a in pm.alerts if a.role == "joined")
    out = ["## Alerts\n",
           f"{len(pm.alerts)} alert(s) opened or joined this incident ({joined} joined the running incident instead "
           "of starting a run of their own; table artifact `incident-alerts`):\n",
           "| Role | Alert | Source | Status | Started | Received | Joined | Resolved | Labels |",
           "|---|---|---|---|---|---|---|---|---|"]
    for a in pm.alerts:
        cells = (a.role, a.alertname, a.source, a.status, a.starts_at, a.received_at, a.joined_at, a.resolved_at, a.labels)
        out.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    out.append("")
    return out


def render_markdown(pm: PostMortem, base_dir: Path | None = None, inline_images: bool = False) -> str:
    """`base_dir`: the report's directory, so chart links are relative to it; `inline_images`: embed
    charts as data: URIs (for the self-contained HTML)."""
    out: list[str] = []
    drill = " (drill)" if pm.drill else ""
    out.append(f"# Post-mortem: {md_text(pm.title)}{drill}\n")
    out.append(f"- **Incident Title**: {md_text(pm.title)}")
    out.append(f"- **Date**: {pm.date.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}")
    out.append(f"- **Duration**: {pm.duration_text}")
    out.append(f"- **Impact**: {md_text(pm.impact)}")
    run = f"`{pm.flow_run_id}`" + (f" ({md_text(pm.flow_run_name)})" if pm.flow_run_name else "")
    if pm.flow_run_url:
        run += f" — <{pm.flow_run_url}>"
    out.append(f"- **Flow run**: {run}, final state {md_text(pm.final_state or 'unknown')}")
    if pm.drill:
        out.append("- **Drill**: yes — this incident was injected on purpose to exercise the runbook")
    out.append("")
    out.append("## Incident Summary\n")
    out.append(md_text(pm.summary) + "\n")
    if pm.alerts:
        out.extend(_alerts_section(pm))
    out.append("## Timeline\n")
    if pm.timeline:
        out.append("| Time (UTC) | Kind | Event | Detail |")
        out.append("|---|---|---|---|")
        for e in pm.timeline:
            out.append(f"| {_when(pm, e.at)} | {e.kind} | {md_text(e.event)} | {md_text(e.detail)} |")
    else:
        out.append("No timeline entries were recorded.")
    out.append("")
    if pm.charts:
        out.extend(_charts_section(pm, base_dir, inline_images))
    out.append("## Root Cause Analysis\n")
    out.extend(_ranked_causes(pm))
    out.extend(f"- {md_text(item)}" for item in pm.root_cause)
    if not pm.ranked_causes and not pm.root_cause:
        out.append("The evidence did not establish a root cause.")
    out.append("")
    for heading, items, empty in (
        ("Actions Taken", pm.actions_taken, "No action changed the cluster."),
        ("Lessons Learned", pm.lessons_learned, "None recorded."),
    ):
        out.append(f"## {heading}\n")
        out.extend(f"- {md_text(item)}" for item in items) if items else out.append(empty)
        out.append("")
    out.append("## Action Items\n")
    if pm.action_items:
        out.extend(f"{i}. {md_text(item)}" for i, item in enumerate(pm.action_items, start=1))
    else:
        out.append("None.")
    out.append("")
    out.append("## Evidence\n")
    if not pm.evidence:
        out.append("No evidence was stored.")
    for item in pm.evidence:
        step = f" (step: {md_text(item.step)})" if item.step else ""
        out.append(f"### {md_text(item.title)}{step}\n")
        out.append(md_code_block(item.content) + "\n")
    return "\n".join(out).rstrip() + "\n"


def render_html(pm: PostMortem, markdown: str | None = None) -> str:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = md.render(markdown if markdown is not None else render_markdown(pm, inline_images=True))
    title = html.escape(f"Post-mortem: {pm.title}")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n"
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;vertical-align:top}"
        "pre{background:#f6f8fa;padding:.5rem;overflow-x:auto}img{max-width:100%}</style>\n"
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )
