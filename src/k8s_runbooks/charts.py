"""PNG charts of metric range snapshots with the incident's moments marked (matplotlib, Agg backend).

Prefect-free: flows query Prometheus, turn each `RangeSeries` into `ChartLine`s and call `render_chart`.
The Agg backend is selected explicitly so rendering never needs a display (CI, workers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402 - after the backend is chosen
import matplotlib.pyplot as plt  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from k8s_runbooks.models import RangeSeries  # noqa: E402
from k8s_runbooks.postmortem.model import ChartRef  # noqa: E402,F401 - re-exported for flows

MomentKind = Literal["detected", "action", "recovered", "escalation"]
_MOMENT_STYLE: dict[str, tuple[str, str]] = {
    "detected": ("tab:red", "--"),
    "action": ("tab:orange", "-."),
    "recovered": ("tab:green", ":"),
    "escalation": ("tab:purple", "--"),
}
MAX_LINES = 8  # a chart with more lines is unreadable; the table artifact has all of them


class ChartLine(BaseModel):
    label: str
    points: list[tuple[float, float]] = Field(default_factory=list, description="(unix seconds, value)")


class Moment(BaseModel):
    at: datetime
    kind: MomentKind
    label: str = ""


def lines_from_range(series: RangeSeries, label: Callable[[dict[str, str]], str], scale: float = 1.0) -> list[ChartLine]:
    """One line per series; NaN/inf values dropped (histogram_quantile of an idle window is NaN)."""
    out = []
    for labels, points in series.series:
        kept = [(t, v * scale) for t, v in points if math.isfinite(v)]
        out.append(ChartLine(label=label(labels), points=kept))
    return out


def first_breach(lines: list[ChartLine], threshold: float) -> float | None:
    """Start (unix seconds) of the last uninterrupted run above `threshold` of any line, else None."""
    starts: list[float] = []
    for line in lines:
        start: float | None = None
        for t, v in line.points:
            if v > threshold:
                start = t if start is None else start
            else:
                start = None
        if start is not None:
            starts.append(start)
    return min(starts) if starts else None


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def render_chart(
    path: Path,
    title: str,
    lines: list[ChartLine],
    *,
    ylabel: str = "",
    moments: list[Moment] | None = None,
    threshold: float | None = None,
    threshold_label: str = "threshold",
) -> Path:
    """Write one PNG; an empty chart says "no data" instead of failing (missing data is evidence too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    try:
        drawn = [line for line in lines if line.points][:MAX_LINES]
        for line in drawn:
            ax.plot([_utc(t) for t, _ in line.points], [v for _, v in line.points], label=line.label, linewidth=1.4)
        if not drawn:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=14, color="grey")
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linewidth=0.8, alpha=0.6, label=threshold_label)
        for m in moments or []:
            colour, style = _MOMENT_STYLE.get(m.kind, ("black", "--"))
            ax.axvline(m.at, color=colour, linestyle=style, linewidth=1.2, label=f"{m.kind}: {m.label}"[:60] if m.label else m.kind)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("time (UTC)")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
        ax.grid(True, alpha=0.3)
        if drawn or threshold is not None or moments:
            ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def table_rows(lines: list[ChartLine], max_rows: int = 60) -> list[dict[str, object]]:
    """Rows (time, one column per line) for a table artifact, evenly thinned to at most `max_rows`."""
    times = sorted({t for line in lines for t, _ in line.points})
    if len(times) > max_rows:
        stride = math.ceil(len(times) / max_rows)
        times = times[::stride]
    by_line = [dict(line.points) for line in lines]
    rows: list[dict[str, object]] = []
    for t in times:
        row: dict[str, object] = {"time": _utc(t).strftime("%H:%M:%S")}
        for line, values in zip(lines, by_line):
            v = values.get(t)
            row[line.label] = None if v is None else round(v, 4)
        rows.append(row)
    return rows
