"""Prefect tasks: thin wrappers over the Prefect-free core in `k8s_runbooks`, one per core function.

Every task uses the shared retry policy of `tasks._retry` (retry only transient errors, backoff + jitter).
"""

from tasks.audit_events import install as _install_audit_events

_install_audit_events()
