"""Prefect tasks: thin wrappers over the Prefect-free core in `k8s_runbooks`, one per core function.

Every task uses the shared retry policy of `tasks._retry` (retry only transient errors, backoff + jitter).
"""
