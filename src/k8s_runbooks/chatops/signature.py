"""Slack request signatures: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{raw body}">`
keyed with the app's signing secret, `X-Slack-Request-Timestamp` within 5 minutes of now."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from k8s_runbooks.errors import AuthError

VERSION = "v0"
MAX_AGE_SECONDS = 300
SCHEME = "Slack-Signature"


def _expected(secret: str, timestamp: str, body: bytes) -> str:
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def verify_slack_request(body: bytes, timestamp: str | None, signature: str | None, secret: SecretStr | None,
                         now: float, max_age: float = MAX_AGE_SECONDS) -> None:
    """Raise AuthError unless `body` was signed by Slack with `secret` less than `max_age` seconds ago.

    Without a secret nothing is accepted: an approval endpoint that skipped verification would let anyone
    who can reach it approve remediations."""
    if secret is None:
        raise AuthError("Slack request signing is not configured (K8S_RUNBOOKS_SLACK_SIGNING_SECRET)", scheme=SCHEME)
    if not timestamp or not signature:
        raise AuthError("missing X-Slack-Request-Timestamp or X-Slack-Signature", scheme=SCHEME)
    ts = timestamp.strip()
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
        raise AuthError("X-Slack-Request-Timestamp is not a Unix time", scheme=SCHEME)
    if abs(now - int(ts)) > max_age:
        raise AuthError(f"stale request: X-Slack-Request-Timestamp is more than {max_age:g} s from now", scheme=SCHEME)
    expected = _expected(secret.get_secret_value(), ts, body)
    given = signature.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode()):
        raise AuthError("invalid X-Slack-Signature (v0 HMAC-SHA256 of v0:timestamp:body with the signing secret)",
                        scheme=SCHEME)
