"""The Sentry tasks and the on_failure hook inside real Prefect flow runs (temporary local Prefect API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.testing.utilities import prefect_test_harness

from k8s_runbooks.errors import Forbidden
from tasks.sentry import recent_sentry_issues, sentry_on_failure
from tests.helpers.envelope_receiver import EnvelopeReceiver, FakeSentryApi, sentry_issue

pytestmark = pytest.mark.timeout(300)

TOKEN = "sntrys_task_token_abcdef0123456789"
END = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
START = END - timedelta(hours=1)
# Same policy (retry only TransientError), no waiting between attempts in tests.
fast_issues = recent_sentry_issues.with_options(retry_delay_seconds=0)


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    # Generous: other test suites share these 2 cores, and the temporary server then starts slowly.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def fake() -> Iterator[FakeSentryApi]:
    with FakeSentryApi(TOKEN, {("acme", "checkout"): [sentry_issue(n) for n in range(1, 4)]}) as server:
        yield server


@pytest.fixture()
def configured(settings_env: pytest.MonkeyPatch, fake: FakeSentryApi) -> FakeSentryApi:
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_API_URL", fake.api_url)
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_ORG", "acme")
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_TOKEN", TOKEN)
    return fake


@flow
def lookup(service: str) -> list:
    return fast_issues(service, START, END)


def test_500_then_200_is_retried_by_the_task(configured: FakeSentryApi) -> None:
    configured.fail_next = [500]
    issues = lookup("checkout")
    assert [i.short_id for i in issues] == ["CHECKOUT-1", "CHECKOUT-2", "CHECKOUT-3"]
    assert len(configured.requests) == 1 + 2  # the failed attempt, then two pages


def test_bad_token_fails_fast_without_retries(settings_env: pytest.MonkeyPatch, configured: FakeSentryApi) -> None:
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_TOKEN", "revoked")
    with pytest.raises(Forbidden, match="event:read"):
        lookup("checkout")
    assert len(configured.requests) == 1


def test_not_configured_returns_empty(settings_env: pytest.MonkeyPatch) -> None:
    assert lookup("checkout") == []


def test_token_from_prefect_secret_block(settings_env: pytest.MonkeyPatch, fake: FakeSentryApi) -> None:
    Secret(value=TOKEN).save("sentry-token-test", overwrite=True)
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_API_URL", fake.api_url)
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_ORG", "acme")
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_TOKEN_BLOCK", "sentry-token-test")
    assert len(lookup("checkout")) == 3


SECRET = "s3cr3t-hunter2-password-value"


@flow(name="pod-crash-test", on_failure=[sentry_on_failure("pod-crash")])
def failing_runbook(namespace: str, deployment: str) -> None:
    raise RuntimeError(f"rollout failed: could not log in with password={SECRET}")


def test_on_failure_hook_reports_with_flow_run_context(
    settings_env: pytest.MonkeyPatch, receiver: EnvelopeReceiver
) -> None:
    settings_env.setenv("K8S_RUNBOOKS_SENTRY_DSN", receiver.dsn)
    state = failing_runbook("shop", "checkout", return_state=True)
    assert state.is_failed()
    (event,) = receiver.wait_for_events(1)
    assert event["tags"]["runbook"] == "pod-crash"
    assert event["tags"]["flow_name"] == "pod-crash-test"
    assert event["tags"]["namespace"] == "shop" and event["tags"]["deployment"] == "checkout"
    assert event["tags"]["flow_run_id"] == str(state.state_details.flow_run_id)
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert SECRET not in json.dumps(event)
