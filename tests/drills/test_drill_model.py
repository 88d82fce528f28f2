"""Drill model without a cluster: scorecard round trip and rendering, Pushgateway text, trend, runbook binding."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from k8s_runbooks.drills.model import DrillParams, FaultSpec, Phase, Scorecard, validate_env
from k8s_runbooks.drills.pushgateway import group_url, metrics_text
from k8s_runbooks.drills.report import scorecard_document, trend_chart, trend_of
from k8s_runbooks.runbook_docs import load_runbook, runbooks_dir

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def card(run: str, minutes: int, detect: float | None, recover: float | None, outcome: str = "passed") -> Scorecard:
    return Scorecard(drill_run_id=run, scenario="pod-crash", namespace="drill-a", deployment="web", fault="FAULT_CRASH_AFTER_S=1",
                     started_at=T0 + timedelta(minutes=minutes), outcome=outcome,  # type: ignore[arg-type]
                     phases=[Phase(name="detect", seconds=detect, target_seconds=60, met=None if detect is None else detect <= 60),
                             Phase(name="recover", seconds=recover, target_seconds=30, met=None if recover is None else recover <= 30)])


def test_scorecard_round_trips_through_its_markdown_artifact() -> None:
    c = card("r1", 0, 4.2, 45.0, "failed")
    c.responders = ["10:00:05 roll back `web` | evil"]
    text = scorecard_document(c)
    assert "| recover | 45.0 s | 30.0 s | MISSED |" in text
    assert "**FAILED**" in text
    back = Scorecard.from_markdown(text)
    assert back == c


def test_metrics_text_has_phases_success_and_timestamp() -> None:
    c = card("r1", 0, 4.2, 12.5)
    c.finished_at = T0
    text = metrics_text(c)
    assert 'k8s_runbooks_drill_phase_seconds{scenario="pod-crash",phase="detect"} 4.200' in text
    assert 'k8s_runbooks_drill_success{scenario="pod-crash",outcome="passed"} 1' in text
    assert f"k8s_runbooks_drill_last_run_timestamp_seconds{{scenario=\"pod-crash\"}} {T0.timestamp():.3f}" in text
    assert group_url("http://pg:9091/", "drill-a", "web") == "http://pg:9091/metrics/job/k8s_runbooks_drill/namespace/drill-a/deployment/web"


def test_trend_orders_runs_and_averages_measured_ones(tmp_path: Path) -> None:
    trend = trend_of("drill-a", "web", [card("r2", 10, 6.0, 20.0), card("r1", 0, 4.0, None, "failed"),
                                        card("other", 5, 1.0, 1.0).model_copy(update={"deployment": "api"})])
    assert [p.run_id for p in trend.points] == ["r1", "r2"]
    assert trend.mttd == pytest.approx(5.0) and trend.mttr == pytest.approx(20.0)
    png = trend_chart(trend, tmp_path / "trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fault_spec_env_and_validation() -> None:
    assert FaultSpec(kind="latency", value="500").env() == {"FAULT_LATENCY_MS": "500"}
    assert FaultSpec(kind="pod-kill").env() == {}
    with pytest.raises(ValueError):
        validate_env({"bad name": "1"})
    with pytest.raises(ValueError):
        DrillParams(namespace="Bad_NS", deployment="web")


def test_drill_runbooks_are_bound_to_the_drill_flows() -> None:
    import flows.drills  # noqa: F401 - registers the steps
    from flows.steps import declared_steps

    for name in ("drill-pod-crash", "drill-latency"):
        book = load_runbook(runbooks_dir() / f"{name}.md")
        assert book.flow == name and book.step_ids == declared_steps(name)
        import tasks.drills as t
        assert all(hasattr(t, task) for step in book.steps for task in step.tasks), book.bindings
