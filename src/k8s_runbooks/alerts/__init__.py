"""Durable alert receiver: webhooks (Alertmanager, Grafana, Sentry) -> SQLite spool -> Prefect deployment runs."""
