"""Sentry Web API reads against a fake Sentry at the HTTP level (see tests/helpers/envelope_receiver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from k8s_runbooks.errors import Forbidden, InvalidInput, NotFound, TransientError
from k8s_runbooks.sentry import api
from k8s_runbooks.settings import Settings
from tests.helpers.envelope_receiver import FakeSentryApi, sentry_issue
from tests.helpers.http_receiver import free_port

TOKEN = "sntrys_test_token_0123456789"
END = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
START = END - timedelta(hours=1)


@pytest.fixture()
def fake() -> Iterator[FakeSentryApi]:
    issues = {("acme", "checkout"): [sentry_issue(n) for n in range(1, 6)], ("acme", "payments"): []}
    with FakeSentryApi(TOKEN, issues, page_size=2) as server:
        yield server


def target(fake: FakeSentryApi, service: str = "checkout", token: str = TOKEN, **overrides: str) -> api.SentryTarget:
    settings = Settings(sentry_api_url=fake.api_url, sentry_org="acme", **overrides)
    return api.target_for(service, settings, token)


def test_issues_are_parsed_across_pages(fake: FakeSentryApi) -> None:
    issues = api.recent_issues(target(fake), START, END, timeout=5)
    assert [i.short_id for i in issues] == [f"CHECKOUT-{n}" for n in range(1, 6)]
    first = issues[0]
    assert first.id == "1001" and first.title == "ValueError: crash 1" and first.count == 10
    assert first.level == "error" and first.culprit == "shop.app in handle"
    assert first.last_seen == datetime(2026, 11, 25, 10, 5, tzinfo=timezone.utc)
    gets = [r for r in fake.requests if r.method == "GET"]
    assert len(gets) == 3  # 2 + 2 + 1, stopped by results="false"
    assert "start=2026-11-25T09%3A30%3A00%2B00%3A00" in gets[0].path
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in gets)


def test_pagination_is_bounded(fake: FakeSentryApi) -> None:
    issues = api.recent_issues(target(fake), START, END, timeout=5, max_pages=2)
    assert len(issues) == 4


def test_project_setting_overrides_service_name(fake: FakeSentryApi) -> None:
    assert api.recent_issues(target(fake, "web", sentry_project="payments"), START, END, timeout=5) == []


def test_bad_token_fails_fast_with_scope_hint(fake: FakeSentryApi) -> None:
    with pytest.raises(Forbidden) as err:
        api.recent_issues(target(fake, token="wrong"), START, END, timeout=5)
    assert "event:read" in str(err.value) and "project:read" in str(err.value)
    assert "wrong" not in str(err.value)


def test_unknown_project_is_not_found_with_slug_hint(fake: FakeSentryApi) -> None:
    with pytest.raises(NotFound, match="slugs"):
        api.recent_issues(target(fake, "nope"), START, END, timeout=5)


@pytest.mark.parametrize("status", [500, 502, 429])
def test_server_errors_and_rate_limits_are_transient(fake: FakeSentryApi, status: int) -> None:
    fake.fail_next = [status]
    with pytest.raises(TransientError):
        api.recent_issues(target(fake), START, END, timeout=5)


def test_unreachable_sentry_is_transient() -> None:
    settings = Settings(sentry_api_url=f"http://127.0.0.1:{free_port()}/api/0", sentry_org="acme")
    with pytest.raises(TransientError, match="cannot reach"):
        api.recent_issues(api.target_for("checkout", settings, TOKEN), START, END, timeout=2)


def test_hostile_slugs_are_refused(fake: FakeSentryApi) -> None:
    with pytest.raises(InvalidInput):
        target(fake, "../../organizations/acme/members")


def test_not_configured_reason() -> None:
    assert "K8S_RUNBOOKS_SENTRY_ORG" in (api.not_configured_reason(Settings(sentry_org=None), TOKEN) or "")
    assert "TOKEN" in (api.not_configured_reason(Settings(sentry_org="acme"), None) or "")
    assert api.not_configured_reason(Settings(sentry_org="acme"), TOKEN) is None
