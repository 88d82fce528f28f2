from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk

from k8s_runbooks.settings import get_settings
from tests.helpers.envelope_receiver import EnvelopeReceiver


@pytest.fixture()
def receiver() -> Iterator[EnvelopeReceiver]:
    with EnvelopeReceiver() as r:
        yield r
    # Leave no client pointing at a dead port for later tests.
    sentry_sdk.get_client().close(timeout=1)


@pytest.fixture()
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set K8S_RUNBOOKS_* variables with `settings_env.setenv`; the settings cache is reset around the test."""
    for var in ("SENTRY_DSN", "SENTRY_TOKEN", "SENTRY_TOKEN_BLOCK", "SENTRY_ORG", "SENTRY_PROJECT", "SENTRY_API_URL"):
        monkeypatch.delenv(f"K8S_RUNBOOKS_{var}", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
