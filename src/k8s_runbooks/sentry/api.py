"""Read recent Sentry issues of a service through Sentry's Web API (httpx, timeouts, bounded pagination).

`GET {sentry_api_url}/projects/{org}/{project}/issues/?query=is:unresolved&start=..&end=..` with a bearer
token. The project slug is `settings.sentry_project`, else the service name. Pagination follows the
`Link: <...>; rel="next"; results="true"` header for at most `max_pages` pages.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import SecretStr

from k8s_runbooks.errors import (
    ConfigError,
    Forbidden,
    InvalidInput,
    NotFound,
    RunbookError,
    TransientError,
    from_http_status,
)
from k8s_runbooks.models import SentryIssue
from k8s_runbooks.settings import Settings

log = logging.getLogger(__name__)

MAX_PAGES = 5
_SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}", re.IGNORECASE)
_LINK = re.compile(r'<([^>]*)>\s*;([^,]*)')


@dataclass(frozen=True)
class SentryTarget:
    api_url: str
    org: str
    project: str
    token: SecretStr


def not_configured_reason(settings: Settings, token: SecretStr | str | None) -> str | None:
    """Why issues cannot be looked up, or None when they can."""
    missing = []
    if not settings.sentry_org:
        missing.append("K8S_RUNBOOKS_SENTRY_ORG")
    if not token:
        missing.append("K8S_RUNBOOKS_SENTRY_TOKEN (or a Prefect Secret block named by K8S_RUNBOOKS_SENTRY_TOKEN_BLOCK)")
    return f"Sentry issue look-up is not configured: set {' and '.join(missing)}" if missing else None


def target_for(service: str, settings: Settings, token: SecretStr | str) -> SentryTarget:
    project = settings.sentry_project or service
    for what, slug in (("organisation", settings.sentry_org or ""), ("project", project)):
        if not _SLUG.fullmatch(slug):
            raise InvalidInput(f"invalid Sentry {what} slug {slug!r}", hint="slugs are letters, digits, '-', '_' and '.'")
    secret = token if isinstance(token, SecretStr) else SecretStr(token)
    return SentryTarget(settings.sentry_api_url.rstrip("/"), settings.sentry_org or "", project, secret)


def recent_issues(
    target: SentryTarget,
    start: datetime,
    end: datetime,
    *,
    timeout: float = 10.0,
    max_pages: int = MAX_PAGES,
    transport: httpx.BaseTransport | None = None,
) -> list[SentryIssue]:
    """Unresolved issues of the project seen between start and end (newest activity first, as Sentry sorts)."""
    start, end = _aware(start), _aware(end)
    if end < start:
        raise InvalidInput(f"Sentry window end {end.isoformat()} is before start {start.isoformat()}")
    url: str | None = f"{target.api_url}/projects/{target.org}/{target.project}/issues/"
    params: dict[str, str] | None = {
        "query": "is:unresolved",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "limit": "100",
    }
    headers = {"Authorization": f"Bearer {target.token.get_secret_value()}", "Accept": "application/json"}
    issues: list[SentryIssue] = []
    with httpx.Client(timeout=timeout, headers=headers, transport=transport, follow_redirects=False) as client:
        for _ in range(max_pages):
            assert url is not None
            response = _get(client, url, params, target)
            issues.extend(_parse_issue(item) for item in _json_list(response))
            url, params = _next_page(response), None  # the next link carries the query and cursor
            if url is None:
                break
            if httpx.URL(url).netloc != httpx.URL(target.api_url).netloc:
                # Never send the token to another host, whatever the Link header says.
                log.warning("Sentry: ignoring a next-page link to another host")
                break
        else:
            if url is not None:
                log.info("Sentry: stopped after %d pages of issues for %s/%s", max_pages, target.org, target.project)
    return issues


def _get(client: httpx.Client, url: str, params: dict[str, str] | None, target: SentryTarget) -> httpx.Response:
    what = f"Sentry issues of {target.org}/{target.project}"
    try:
        response = client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what}: Sentry did not answer in time ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: cannot reach Sentry at {target.api_url} ({type(exc).__name__})") from None
    if response.status_code == 200:
        return response
    raise _error(response, what)


def _error(response: httpx.Response, what: str) -> RunbookError:
    status = response.status_code
    try:
        detail = str(response.json().get("detail", ""))[:300]
    except (ValueError, AttributeError):
        detail = response.text[:300]
    if status in (401, 403):
        return Forbidden(
            f"{what} was denied (HTTP {status}){': ' + detail if detail else ''}",
            hint="check the Sentry auth token and that it has the event:read and project:read scopes",
        )
    if status == 404:
        return NotFound(
            f"{what}: not found (HTTP 404)",
            hint="check the organisation and project slugs (K8S_RUNBOOKS_SENTRY_ORG / K8S_RUNBOOKS_SENTRY_PROJECT)",
        )
    retry_after = response.headers.get("Retry-After", "")
    return from_http_status(status, what, detail, retry_after=float(retry_after) if retry_after.isdigit() else None)


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        data = response.json()
    except ValueError:
        raise ConfigError("Sentry did not answer with JSON", hint="check K8S_RUNBOOKS_SENTRY_API_URL (…/api/0)") from None
    if not isinstance(data, list):
        raise ConfigError("Sentry answered with something other than a list of issues", hint="check K8S_RUNBOOKS_SENTRY_API_URL")
    return [item for item in data if isinstance(item, dict)]


def _next_page(response: httpx.Response) -> str | None:
    for url, attrs in _LINK.findall(response.headers.get("Link", "")):
        fields = dict(
            (k.strip(), v.strip().strip('"')) for k, _, v in (part.partition("=") for part in attrs.split(";")) if k.strip()
        )
        if fields.get("rel") == "next" and fields.get("results", "true") == "true":
            return url
    return None


def _parse_issue(item: dict[str, Any]) -> SentryIssue:
    count = item.get("count")
    return SentryIssue(
        id=str(item.get("id", "")),
        short_id=item.get("shortId"),
        title=str(item.get("title") or item.get("metadata", {}).get("title") or "(untitled)"),
        culprit=item.get("culprit"),
        level=item.get("level"),
        count=int(count) if isinstance(count, (int, str)) and str(count).isdigit() else None,
        first_seen=item.get("firstSeen"),
        last_seen=item.get("lastSeen"),
        permalink=item.get("permalink"),
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
