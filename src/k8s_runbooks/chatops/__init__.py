"""ChatOps: approvals in Slack with verified approvers, on-call paging (PagerDuty Events API v2), email.

Prefect-free. The one module that talks to Prefect is `prefect_runs.py` (the receiver's adapter for reading
and resuming paused runs); flows reach this package through `flows/chatops.py`.
"""
