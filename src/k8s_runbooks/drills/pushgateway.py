"""Drill metrics in the Prometheus text format, PUT to the Pushgateway (one group per target)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from k8s_runbooks.errors import TransientError, from_http_status

if TYPE_CHECKING:
    from k8s_runbooks.drills.model import Scorecard

JOB = "k8s_runbooks_drill"


def metrics_text(card: "Scorecard") -> str:
    scenario = card.scenario.replace('"', "")
    lines = [
        "# HELP k8s_runbooks_drill_phase_seconds Duration of a drill phase (detect, respond, approval, recover).",
        "# TYPE k8s_runbooks_drill_phase_seconds gauge",
    ]
    for p in card.phases:
        if p.seconds is not None:
            lines.append(f'k8s_runbooks_drill_phase_seconds{{scenario="{scenario}",phase="{p.name}"}} {p.seconds:.3f}')
    lines += [
        "# HELP k8s_runbooks_drill_phase_target_met 1 when the phase met its target, 0 when it missed.",
        "# TYPE k8s_runbooks_drill_phase_target_met gauge",
    ]
    for p in card.phases:
        if p.met is not None:
            lines.append(f'k8s_runbooks_drill_phase_target_met{{scenario="{scenario}",phase="{p.name}"}} {int(p.met)}')
    finished = (card.finished_at or card.started_at).timestamp()
    lines += [
        "# HELP k8s_runbooks_drill_success 1 when the last drill passed.",
        "# TYPE k8s_runbooks_drill_success gauge",
        f'k8s_runbooks_drill_success{{scenario="{scenario}",outcome="{card.outcome}"}} {int(card.success)}',
        "# HELP k8s_runbooks_drill_rollback_verified 1 when the steady state held after the rollback.",
        "# TYPE k8s_runbooks_drill_rollback_verified gauge",
        f'k8s_runbooks_drill_rollback_verified{{scenario="{scenario}"}} {int(bool(card.rollback_ok))}',
        "# HELP k8s_runbooks_drill_last_run_timestamp_seconds When the last drill finished (unix seconds).",
        "# TYPE k8s_runbooks_drill_last_run_timestamp_seconds gauge",
        f'k8s_runbooks_drill_last_run_timestamp_seconds{{scenario="{scenario}"}} {finished:.3f}',
    ]
    return "\n".join(lines) + "\n"


def group_url(base: str, namespace: str, deployment: str) -> str:
    # namespace/deployment are validated Kubernetes names: no '/' can escape the grouping path
    return f"{base.rstrip('/')}/metrics/job/{JOB}/namespace/{namespace}/deployment/{deployment}"


def push(base: str, card: "Scorecard", *, timeout: float = 10.0) -> str:
    """PUT replaces the target's group, so stale series of an older drill never linger."""
    url = group_url(base, card.namespace, card.deployment)
    try:
        r = httpx.put(url, content=metrics_text(card).encode(), headers={"Content-Type": "text/plain; version=0.0.4"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TransientError(f"Pushgateway at {base} unreachable: {exc.__class__.__name__}", hint="is the Pushgateway up?") from exc
    if r.status_code >= 400:
        raise from_http_status(r.status_code, "push drill metrics", r.text[:300])
    return url
