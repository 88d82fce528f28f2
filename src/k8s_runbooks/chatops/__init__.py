"""ChatOps: approvals in Slack with verified approvers, on-call paging (PagerDuty Events API v2), email.

Prefect-free. The Prefect side lives in `k8s_runbooks_prefect.chatops.prefect_runs` (the receiver's adapter for reading
and resuming paused runs); flows reach this package through `flows/chatops.py`.
"""
