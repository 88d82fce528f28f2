"""Charts: real PNGs from synthetic series, moments marked, "no data" instead of a failure, thin tables."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from k8s_runbooks.charts import ChartLine, Moment, first_breach, lines_from_range, render_chart, table_rows
from k8s_runbooks.models import RangeSeries
from k8s_runbooks.postmortem.model import ChartRef, PostMortem
from k8s_runbooks.postmortem.render import render_html, render_markdown

PNG = b"\x89PNG\r\n\x1a\n"
T0 = 1_764_000_000.0


def _line(values: list[float], label: str = "p95") -> ChartLine:
    return ChartLine(label=label, points=[(T0 + 10 * i, v) for i, v in enumerate(values)])


def test_render_chart_writes_a_png_with_threshold_and_moments(tmp_path: Path) -> None:
    moments = [Moment(at=datetime.fromtimestamp(T0 + 30, tz=timezone.utc), kind="detected", label="p95 > 300 ms"),
               Moment(at=datetime.fromtimestamp(T0 + 60, tz=timezone.utc), kind="action", label="rollout undo"),
               Moment(at=datetime.fromtimestamp(T0 + 90, tz=timezone.utc), kind="recovered")]
    plain = render_chart(tmp_path / "plain.png", "Latency", [_line([100, 120, 800, 820, 810, 150, 100, 90, 95, 100])], ylabel="ms")
    marked = render_chart(tmp_path / "charts" / "marked.png", "Latency", [_line([100, 120, 800, 820, 810, 150, 100, 90, 95, 100])],
                          ylabel="ms", moments=moments, threshold=300)
    assert plain.read_bytes().startswith(PNG) and marked.read_bytes().startswith(PNG)
    assert marked.read_bytes() != plain.read_bytes()  # the marks and the threshold are drawn


def test_empty_chart_says_no_data_instead_of_failing(tmp_path: Path) -> None:
    path = render_chart(tmp_path / "empty.png", "CPU throttling", [ChartLine(label="pod-a")])
    assert path.read_bytes().startswith(PNG)


def test_lines_from_range_drops_nan_and_scales() -> None:
    series = RangeSeries(query="q", start=datetime.now(timezone.utc), end=datetime.now(timezone.utc), step_seconds=10,
                         series=[({"pod": "a"}, [(T0, 0.5), (T0 + 10, math.nan), (T0 + 20, 0.25)])])
    (line,) = lines_from_range(series, lambda labels: labels["pod"], scale=1000)
    assert line.label == "a" and line.points == [(T0, 500.0), (T0 + 20, 250.0)]


def test_first_breach_is_the_start_of_the_current_breach() -> None:
    assert first_breach([_line([900, 100, 400, 500, 600])], 300) == T0 + 20
    assert first_breach([_line([900, 100, 200])], 300) is None


def test_table_rows_are_thinned_and_aligned() -> None:
    rows = table_rows([_line(list(range(200)), "p95"), _line(list(range(100)), "p99")], max_rows=50)
    assert len(rows) <= 50 and rows[0]["p95"] == 0 and rows[0]["p99"] == 0
    assert rows[-1]["p99"] is None  # p99 has no point that late


def test_postmortem_embeds_charts_relative_in_markdown_and_inline_in_html(tmp_path: Path) -> None:
    chart = render_chart(tmp_path / "run" / "charts" / "latency.png", "Latency", [_line([1, 2, 3])])
    pm = PostMortem(title="t <script>", flow_run_id="r", date=datetime.now(timezone.utc), duration=0, impact="i", summary="s",
                    charts=[ChartRef(title="Latency of shop/checkout", path=str(chart)),
                            ChartRef(title="Gone", path=str(tmp_path / "missing.png"))])
    md = render_markdown(pm, base_dir=tmp_path / "run")
    assert "![Latency of shop/checkout](<charts/latency.png>)" in md and "chart file missing" in md
    html = render_html(pm)
    assert '<img src="data:image/png;base64,' in html and "<script>" not in html
