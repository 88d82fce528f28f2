"""Scorecard rendering (Markdown, table rows) and the trend across past drills (MTTD/MTTR)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel

from k8s_runbooks.drills.model import SCORECARD_FENCE, Scorecard


def _esc(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _met(value: bool | None) -> str:
    return "not measured" if value is None else ("met" if value else "MISSED")


def phase_rows(card: Scorecard) -> list[dict[str, Any]]:
    return [{"phase": p.name, "seconds": None if p.seconds is None else round(p.seconds, 1),
             "target_seconds": p.target_seconds, "result": _met(p.met), "detail": p.detail} for p in card.phases]


def scorecard_markdown(card: Scorecard) -> str:
    lines = [
        f"# Drill scorecard: {_esc(card.scenario)} on {_esc(card.namespace)}/{_esc(card.deployment)}\n",
        f"**Outcome**: **{card.outcome.upper()}**" + (f" — {_esc(card.outcome_detail)}" if card.outcome_detail else ""),
        "",
        f"- Fault: {_esc(card.fault or '-')}",
        f"- Response path: {_esc(card.response_path or '-')}, approval {_esc(card.approval or '-')}",
        f"- Started {card.started_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f", fault injected {card.injected_at:%H:%M:%S}" if card.injected_at else ", no fault injected"),
        f"- Runbook run: {_esc(card.runbook_run_id or '-')} ({_esc(card.runbook_state or '-')})",
        "",
        "| phase | time | target | result | detail |",
        "|---|---|---|---|---|",
    ]
    for p in card.phases:
        lines.append(f"| {p.name} | {_secs(p.seconds)} | {_secs(p.target_seconds)} | {_met(p.met)} | {_esc(p.detail)} |")
    if not card.phases:
        lines.append("| — | — | — | — | no phase ran |")
    lines += ["", "## Steady state"]
    for label, report in (("before", card.steady_before), ("after rollback", card.steady_after)):
        if report is None:
            lines.append(f"- {label}: not checked")
        else:
            lines.append(f"- {label}: **{'steady' if report.ok else 'NOT steady'}** — {_esc(report.summary())}")
    lines += ["", "## Rollback", f"- {'verified' if card.rollback_ok else ('NOT verified' if card.rollback_ok is False else 'not needed')}"]
    lines += [f"- {_esc(r)}" for r in card.rollback]
    lines += ["", "## What the responders did"] + ([f"- {_esc(r)}" for r in card.responders] or ["- nothing recorded"])
    return "\n".join(lines)


def scorecard_document(card: Scorecard) -> str:
    """The scorecard artifact: the readable Markdown, then the card as JSON in a fence `Scorecard.from_markdown`
    reads back (backticks escaped so the JSON cannot close the fence)."""
    payload = card.model_dump_json(indent=1).replace("`", "\\u0060")
    return scorecard_markdown(card) + f"\n\n<details><summary>machine-readable</summary>\n\n```{SCORECARD_FENCE}\n{payload}\n```\n</details>\n"


# ------------------------------------------------------------------------------------ trend
class TrendPoint(BaseModel):
    run_id: str
    started_at: datetime
    outcome: str
    detect_seconds: float | None = None
    respond_seconds: float | None = None
    recover_seconds: float | None = None


class Trend(BaseModel):
    namespace: str
    deployment: str
    points: list[TrendPoint]

    @property
    def mttd(self) -> float | None:
        vals = [p.detect_seconds for p in self.points if p.detect_seconds is not None]
        return mean(vals) if vals else None

    @property
    def mttr(self) -> float | None:
        vals = [p.recover_seconds for p in self.points if p.recover_seconds is not None]
        return mean(vals) if vals else None

    def rows(self) -> list[dict[str, Any]]:
        return [{"started": f"{p.started_at:%Y-%m-%d %H:%M:%S}", "run": p.run_id, "outcome": p.outcome,
                 "detect_s": _round(p.detect_seconds), "respond_s": _round(p.respond_seconds),
                 "recover_s": _round(p.recover_seconds)} for p in self.points]

    def markdown(self, chart: Path | None = None) -> str:
        lines = [f"# Drill trend: {_esc(self.namespace)}/{_esc(self.deployment)}\n",
                 f"{len(self.points)} drill run(s); MTTD {_secs(self.mttd)}, MTTR {_secs(self.mttr)}\n",
                 "| started (UTC) | outcome | detect | respond | recover | run |", "|---|---|---|---|---|---|"]
        for p in self.points:
            lines.append(f"| {p.started_at:%Y-%m-%d %H:%M:%S} | {p.outcome} | {_secs(p.detect_seconds)} | "
                         f"{_secs(p.respond_seconds)} | {_secs(p.recover_seconds)} | {p.run_id} |")
        if chart is not None:
            lines.append(f"\nChart: `{chart}`")
        return "\n".join(lines)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def trend_of(namespace: str, deployment: str, cards: list[Scorecard]) -> Trend:
    """Oldest first; only drills that injected a fault are measured (aborted/refused ones are listed too)."""
    points = [TrendPoint(run_id=c.drill_run_id, started_at=c.started_at, outcome=c.outcome,
                         detect_seconds=c.seconds("detect"), respond_seconds=c.seconds("respond"),
                         recover_seconds=c.seconds("recover"))
              for c in cards if c.namespace == namespace and c.deployment == deployment]
    return Trend(namespace=namespace, deployment=deployment, points=sorted(points, key=lambda p: p.started_at))


def trend_chart(trend: Trend, path: Path) -> Path:
    """PNG of detect/recover seconds per drill over time (charts.render_chart, matplotlib Agg)."""
    from k8s_runbooks.charts import ChartLine, render_chart

    lines = []
    for label, attr in (("time to detect (s)", "detect_seconds"), ("time to respond (s)", "respond_seconds"),
                        ("time to recover (s)", "recover_seconds")):
        pts = [(p.started_at.timestamp(), float(getattr(p, attr))) for p in trend.points if getattr(p, attr) is not None]
        lines.append(ChartLine(label=label, points=pts))
    return render_chart(path, f"Drills of {trend.namespace}/{trend.deployment}", lines, ylabel="seconds")
