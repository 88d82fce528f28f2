"""k8s-runbooks: runbook automation for Kubernetes incidents (Prefect-free core)."""

__version__ = "0.1.0"
