"""Range snapshots around an incident: table artifacts and PNG charts with the incident's moments marked.

Charts go to `<reports_dir>/<flow_run_id>/charts/<name>.png` (next to the post-mortem files) and are
listed in the run record, so the post-mortem embeds them; a markdown artifact links them as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger

from flows.artifacts import artifact_key, publish_markdown, publish_table
from flows.common import Run
from k8s_runbooks.charts import ChartLine, ChartRef, Moment, lines_from_range, render_chart, table_rows
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.models import utcnow
from k8s_runbooks.postmortem.model import RunRecord
from k8s_runbooks.postmortem.render import md_text
from k8s_runbooks.prom import promql
from k8s_runbooks.settings import get_settings
from tasks.metrics import prom_range

MAX_POINTS = 120
_MOMENT_KINDS = {"detected", "action", "recovered", "escalation"}


@dataclass(frozen=True)
class Scope:
    namespace: str
    service: str
    deployment: str
    service_label: str
    rate_window: str
    threshold_ms: float
    lookback_minutes: int


@dataclass(frozen=True)
class _Chart:
    name: str
    title: str
    ylabel: str
    queries: list[tuple[str, Callable[[dict[str, str]], str]]]
    scale: float = 1.0
    threshold: float | None = None


def moments(records: list[RunRecord]) -> list[Moment]:
    """Detection, actions and recovery from the runs' timelines (executed/dry-run actions only once)."""
    out: list[Moment] = []
    for rec in records:
        for e in rec.timeline:
            if e.kind in _MOMENT_KINDS and not (e.kind == "action" and "refused" in e.event):
                out.append(Moment(at=e.at, kind=e.kind, label=e.event[:50]))  # type: ignore[arg-type]
    return sorted(out, key=lambda m: m.at)


def _charts(s: Scope) -> list[_Chart]:
    ns, svc, w, lbl = s.namespace, s.service, s.rate_window, s.service_label
    pod: Callable[[dict[str, str]], str] = lambda labels: labels.get("pod", "all")  # noqa: E731
    return [
        _Chart("latency", f"Latency of {ns}/{svc}", "ms", [
            (promql.latency_quantile(ns, svc, 0.95, w, service_label=lbl), lambda _l: "p95"),
            (promql.latency_quantile(ns, svc, 0.99, w, service_label=lbl), lambda _l: "p99"),
        ], scale=1000.0, threshold=s.threshold_ms),
        _Chart("error-rate", f"Error rate of {ns}/{svc}", "% 5xx",
               [(promql.error_ratio(ns, svc, w, service_label=lbl), lambda _l: "5xx share")], scale=100.0),
        _Chart("restarts", f"Container restarts of {ns}/{s.deployment}", f"restarts per {w}",
               [(promql.restart_increase(ns, s.deployment, w), pod)]),
        _Chart("cpu-throttling", f"CPU throttling of {ns}/{s.deployment}", "% of CFS periods",
               [(promql.cpu_throttling_ratio(ns, s.deployment, w), pod)], scale=100.0),
    ]


def _step(start: datetime, end: datetime) -> str:
    return f"{max(1, math.ceil((end - start).total_seconds() / MAX_POINTS))}s"


def publish_charts(run: Run[Any], scope: Scope, records: list[RunRecord]) -> list[ChartRef]:
    """Query each snapshot over [detection - lookback, now], publish its table and PNG, add them to the record."""
    log = get_run_logger()
    marks = moments(records)
    end = utcnow()
    first = min([m.at for m in marks] + [run.record.started_at])
    start = first - timedelta(minutes=scope.lookback_minutes)
    step = _step(start, end)
    out_dir = get_settings().reports_dir.resolve() / run.flow_run_id / "charts"
    refs: list[ChartRef] = []
    for chart in _charts(scope):
        lines: list[ChartLine] = []
        for query, label in chart.queries:
            try:
                lines += lines_from_range(prom_range(query, start, end, step), label, chart.scale)
            except RunbookError as exc:  # a missing snapshot is shown as "no data", never fails the run
                log.warning("range query for %s failed: %s", chart.name, exc)
        key = artifact_key(run.flow, "chart", chart.name)
        publish_table(key, table_rows(lines), f"{chart.title} ({chart.ylabel}), {start:%H:%M:%S}–{end:%H:%M:%S} UTC")
        path = render_chart(out_dir / f"{chart.name}.png", chart.title, lines, ylabel=chart.ylabel, moments=marks,
                            threshold=chart.threshold, threshold_label=f"threshold {chart.threshold:g}" if chart.threshold else "threshold")
        refs.append(ChartRef(title=chart.title, path=str(path), table_key=key))
    run.record.charts = refs
    listing = [f"# Charts of the incident\n", f"Window {start:%Y-%m-%d %H:%M:%S}–{end:%H:%M:%S} UTC, step {md_text(step)}.\n"]
    listing += [f"- {md_text(r.title)}: [{md_text(r.path)}](file://{r.path}) (table `{r.table_key}`)" for r in refs]
    publish_markdown(artifact_key(run.flow, "charts"), "\n".join(listing), "PNG charts of the incident (files next to the post-mortem)")
    run.note("Charts written", f"{len(refs)} charts in {out_dir}", "note")
    return refs
