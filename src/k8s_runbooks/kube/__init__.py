"""Kubernetes access through the official client: one client seam (`client.py`) and small read modules.

Mutating primitives live in `workloads.py` and are called only by `k8s_runbooks.guard`.
"""
