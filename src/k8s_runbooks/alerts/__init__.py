"""Durable alert receiver: webhooks (Alertmanager, Grafana, Sentry) -> SQLite spool -> Prefect deployment runs.

The Prefect side (the dispatcher creating the runs, the server entry point) is k8s_runbooks_prefect.alerts."""
