"""send_webhook against a local Slack-style webhook receiver."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from k8s_runbooks import notify
from k8s_runbooks.errors import PermanentError, TransientError
from tests.helpers.http_receiver import WebhookReceiver, free_port


@pytest.fixture()
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    monkeypatch.setattr(notify, "BACKOFF_S", 0.01)  # keep retries quick; the count is what we check
    with WebhookReceiver() as receiver:
        yield receiver


def test_unset_url_is_artifact_only_mode() -> None:
    assert notify.send_webhook("hi", None) is False
    assert notify.send_webhook("hi", SecretStr("")) is False


def test_delivers_slack_payload(hook: WebhookReceiver) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*recovered*"}}]
    assert notify.send_webhook("checkout recovered", SecretStr(hook.url), 5, blocks=blocks) is True
    (request,) = hook.received
    assert request.json == {"text": "checkout recovered", "blocks": blocks}
    assert request.headers["content-type"] == "application/json"


def test_transient_errors_are_retried(hook: WebhookReceiver) -> None:
    hook.script([500, 429])
    assert notify.send_webhook("hi", hook.url, 5) is True
    assert len(hook.received) == 3


def test_persistent_5xx_raises_transient_after_bounded_attempts(hook: WebhookReceiver) -> None:
    hook.script([503] * 10)
    with pytest.raises(TransientError, match="HTTP 503"):
        notify.send_webhook("hi", hook.url, 5, attempts=3)
    assert len(hook.received) == 3


def test_rejected_payload_fails_at_once(hook: WebhookReceiver) -> None:
    hook.script([400])
    with pytest.raises(PermanentError, match="invalid_payload"):
        notify.send_webhook("hi", hook.url, 5)
    assert len(hook.received) == 1


def test_url_never_appears_in_errors_or_logs(hook: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert notify.send_webhook("hi", hook.url, 5)
    dead = f"http://127.0.0.1:{free_port()}/hooks/T1/B1/another-secret-token"
    with pytest.raises(TransientError) as err:
        notify.send_webhook("hi", dead, 2, attempts=2)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no httpx exception (with the URL) chained
    for text in [str(err.value), caplog.text]:
        assert "secret-path-token" not in text and "another-secret-token" not in text
    assert "<webhook url>" in caplog.text  # httpx's own request line was masked, not dropped
