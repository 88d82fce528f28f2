"""Prometheus access: PromQL builders with escaped label values (promql) and a timed client (client)."""
