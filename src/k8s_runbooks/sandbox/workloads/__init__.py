"""Workloads the sandbox kubelet runs for registry images (stdlib only, fast start)."""
