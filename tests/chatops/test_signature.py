"""Slack's request signature: accepted only when signed with our secret over v0:timestamp:body, within 5 minutes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from k8s_runbooks.alerts.auth import AuthError
from k8s_runbooks.chatops.signature import verify_slack_request

SECRET = SecretStr("8f742231b10e8888abcd99yyyzzz85a5")
NOW = 1_531_420_618


def slack_sign(secret: str, ts: str, body: bytes) -> str:
    """Written from Slack's documentation, independently of the code under test."""
    return "v0=" + hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()


BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"


def test_a_request_signed_by_slack_passes() -> None:
    verify_slack_request(BODY, str(NOW), slack_sign(SECRET.get_secret_value(), str(NOW), BODY), SECRET, now=NOW + 299)


@pytest.mark.parametrize("case", ["other secret", "body changed", "timestamp changed", "no v0 prefix", "upper-case hex"])
def test_forged_signatures_fail(case: str) -> None:
    ts, body, secret = str(NOW), BODY, SECRET.get_secret_value()
    sig = slack_sign("another-secret" if case == "other secret" else secret, ts, body)
    if case == "body changed":
        body = body + b"x"
    if case == "timestamp changed":
        ts = str(NOW + 1)
    if case == "no v0 prefix":
        sig = sig.removeprefix("v0=")
    if case == "upper-case hex":
        sig = "v0=" + sig[3:].upper()
    with pytest.raises(AuthError, match="invalid X-Slack-Signature"):
        verify_slack_request(body, ts, sig, SECRET, now=NOW)


@pytest.mark.parametrize("age", [301, -301, 10_000])
def test_stale_or_future_requests_fail(age: int) -> None:
    ts = str(NOW - age)
    with pytest.raises(AuthError, match="stale request"):
        verify_slack_request(BODY, ts, slack_sign(SECRET.get_secret_value(), ts, BODY), SECRET, now=NOW)


@pytest.mark.parametrize(("ts", "sig", "match"), [
    (None, "v0=abc", "missing"), (str(NOW), None, "missing"), ("", "", "missing"),
    ("12ab", "v0=abc", "not a Unix time"), ("١٢٣", "v0=abc", "not a Unix time"), ("9" * 40, "v0=abc", "not a Unix time"),
])
def test_missing_or_malformed_headers_fail(ts: str | None, sig: str | None, match: str) -> None:
    with pytest.raises(AuthError, match=match):
        verify_slack_request(BODY, ts, sig, SECRET, now=NOW)


def test_nothing_passes_without_a_signing_secret() -> None:
    with pytest.raises(AuthError, match="not configured"):
        verify_slack_request(BODY, str(NOW), slack_sign("", str(NOW), BODY), None, now=NOW)
