"""The sandbox API's request audit (`GET /sandbox/audit`) seen per user: what one identity asked for in a window."""

from __future__ import annotations

from typing import Any

import httpx

RUNBOOKS_USER = "system:serviceaccount:k8s-runbooks:k8s-runbooks"


def user_requests(api_url: str, user: str = RUNBOOKS_USER) -> dict[tuple[str, ...], dict[str, Any]]:
    """(verb, resource, subresource, namespace, group) -> the audit entry of the requests `user` made, allowed or
    not (the kubelet, controllers and a test's own set-up are other users)."""
    data = httpx.get(f"{api_url}/sandbox/audit", timeout=10).json()["requests"]
    return {(r["verb"], r["resource"], r["subresource"], r["namespace"], r.get("group", "")): r for r in data
            if r.get("user") == user}


def requests_since(before: dict[tuple[str, ...], dict[str, Any]],
                   after: dict[tuple[str, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of `after` with the requests made since `before` (count = the difference)."""
    out = []
    for key, r in after.items():
        count = r["count"] - (before[key]["count"] if key in before else 0)
        if count > 0:
            out.append({**r, "count": count})
    return out
