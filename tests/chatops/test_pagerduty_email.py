"""PagerDuty Events v2 against a local /v2/enqueue, and email through a local SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from k8s_runbooks.chatops.email import send_email
from k8s_runbooks.chatops.pagerduty import PagerDuty, severity_from_alert
from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.errors import ConfigError, PermanentError, TransientError
from tests.helpers.http_receiver import free_port
from tests.helpers.pagerduty import LocalPagerDuty

KEY = "R0UT1NGKEY0000000000000000000001"


@pytest.fixture()
def pd() -> Iterator[LocalPagerDuty]:
    with LocalPagerDuty({KEY}) as server:
        yield server


def test_trigger_then_resolve_one_incident(pd: LocalPagerDuty) -> None:
    client = PagerDuty(pd.url, timeout=5)
    got = client.trigger(SecretStr(KEY), "k8s-runbooks/run-1", "pod-crash on shop/checkout: approval pending",
                         "shop/checkout", "critical", component="checkout", group="shop",
                         links=[{"href": "http://prefect/runs/1", "text": "Prefect run"}])
    assert got == "k8s-runbooks/run-1" and set(pd.open) == {"k8s-runbooks/run-1"}
    event = pd.events[-1]
    assert event["event_action"] == "trigger" and event["payload"]["severity"] == "critical"
    assert event["payload"]["group"] == "shop" and event["client_url"] == "http://prefect/runs/1"
    client.resolve(SecretStr(KEY), "k8s-runbooks/run-1")
    assert pd.events[-1] == {"routing_key": KEY, "event_action": "resolve", "dedup_key": "k8s-runbooks/run-1"}
    assert pd.open == {}


def test_invalid_event_is_permanent_and_keeps_the_key_secret(pd: LocalPagerDuty) -> None:
    with pytest.raises(PermanentError, match="routing_key' is invalid") as exc:
        PagerDuty(pd.url).trigger(SecretStr("W" * 32), "d", "s", "src", "critical")
    assert "W" * 32 not in str(exc.value)


def test_throttling_is_retried_then_transient(pd: LocalPagerDuty) -> None:
    pd.fail_next = [429]
    assert PagerDuty(pd.url, attempts=3).trigger(SecretStr(KEY), "d1", "s", "src", "warning") == "d1"
    pd.fail_next = [500, 500]
    with pytest.raises(TransientError, match="HTTP 500"):
        PagerDuty(pd.url, attempts=2).trigger(SecretStr(KEY), "d2", "s", "src", "warning")
    assert "d2" not in pd.open


@pytest.mark.parametrize(("label", "want"), [("critical", "critical"), ("page", "critical"), ("warning", "warning"),
                                             ("INFO", "info"), ("error", "error"), ("", "critical"), ("bogus", "critical")])
def test_severity_from_the_alert(label: str, want: str) -> None:
    assert severity_from_alert(label) == want


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802 - aiosmtpd's handler hook
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture()
def smtp() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def test_email_reaches_the_smtp_server(smtp: tuple[Controller, _Inbox]) -> None:
    controller, inbox = smtp
    settings = ChatOpsSettings(smtp_host="127.0.0.1", smtp_port=controller.port, smtp_starttls=False,
                               email_from="runbooks@example.com")
    assert send_email(settings, ["ops@example.com", "cto@example.com"], "[RESOLVED] shop/checkout", "All good.\n")
    sender, rcpts, raw = inbox.messages[-1]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert sender == "runbooks@example.com" and rcpts == ["ops@example.com", "cto@example.com"]
    assert msg["Subject"] == "[RESOLVED] shop/checkout" and msg.get_content().strip() == "All good."


def test_email_needs_host_and_recipients_and_refuses_a_missing_starttls(smtp: tuple[Controller, _Inbox]) -> None:
    controller, inbox = smtp
    assert send_email(ChatOpsSettings(), ["ops@example.com"], "s", "t") is False
    assert send_email(ChatOpsSettings(smtp_host="127.0.0.1", smtp_port=controller.port), [], "s", "t") is False
    with pytest.raises(ConfigError, match="does not offer STARTTLS"):
        send_email(ChatOpsSettings(smtp_host="127.0.0.1", smtp_port=controller.port), ["ops@example.com"], "s", "t")
    assert inbox.messages == []


def test_unreachable_smtp_is_transient() -> None:
    settings = ChatOpsSettings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False)
    with pytest.raises(TransientError, match="cannot deliver email"):
        send_email(settings, ["ops@example.com"], "s", "t", timeout=2)
