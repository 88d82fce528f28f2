"""Prefect flows: runbook orchestration, approvals and artifacts. Thin: the work happens in tasks/."""
