"""Webhook authentication: bearer tokens, HTTP basic, Sentry's HMAC signature. Constant-time comparisons only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from pydantic import SecretStr


from k8s_runbooks.errors import AuthError

__all__ = ["AuthError", "check_bearer"]


def _eq(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def _split(header: str | None) -> tuple[str, str]:
    if not header:
        return "", ""
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower(), value.strip()


def check_bearer(header: str | None, token: SecretStr | None) -> None:
    """Alertmanager `http_config.authorization` (type Bearer) or any sender with a bearer token."""
    if token is None:
        return
    scheme, value = _split(header)
    if scheme != "bearer" or not value:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    if not _eq(value, token.get_secret_value()):
        raise AuthError("invalid bearer token")


def check_bearer_or_basic(header: str | None, token: SecretStr | None, user: str | None, password: SecretStr | None) -> None:
    """Grafana's webhook contact point: `Authorization: Bearer <token>` or HTTP basic (username/password)."""
    basic_on = user is not None and password is not None
    if token is None and not basic_on:
        return
    scheme, value = _split(header)
    if scheme == "bearer" and token is not None and value:
        if _eq(value, token.get_secret_value()):
            return
        raise AuthError("invalid bearer token")
    if scheme == "basic" and basic_on and value:
        try:
            given_user, sep, given_pw = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("malformed basic credentials", scheme="Basic") from None
        # Evaluate both comparisons so timing does not reveal which one failed.
        ok_user = _eq(given_user, user or "")
        ok_pw = _eq(given_pw, password.get_secret_value() if password else "")
        if sep and ok_user and ok_pw:
            return
        raise AuthError("invalid basic credentials", scheme="Basic")
    accepted = " or ".join(s for s, on in (("Bearer", token is not None), ("Basic", basic_on)) if on)
    raise AuthError(f"missing credentials: send an Authorization header ({accepted})", scheme="Basic" if basic_on else "Bearer")


def sentry_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check_sentry_signature(body: bytes, header: str | None, secret: SecretStr | None) -> None:
    """`Sentry-Hook-Signature`: hex HMAC-SHA256 of the raw body with the integration's client secret."""
    if secret is None:
        return
    if not header:
        raise AuthError("missing Sentry-Hook-Signature header", scheme="Sentry-Hook-Signature")
    expected = sentry_signature(body, secret.get_secret_value())
    if not _eq(header.strip().lower(), expected):
        raise AuthError("invalid Sentry-Hook-Signature (HMAC-SHA256 of the body with the client secret)",
                        scheme="Sentry-Hook-Signature")
