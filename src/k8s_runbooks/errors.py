"""One error hierarchy: transient errors are retried with backoff, permanent ones fail fast.

Every message says what to do next; callers never see a bare traceback from the CLI.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base of every error this project raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TransientError(RunbookError):
    """Worth retrying: 5xx, 429, timeouts, connection errors, optimistic-concurrency conflicts."""

    transient = True

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PermanentError(RunbookError):
    """Retrying cannot help: bad input, missing objects, missing permissions."""


class InvalidInput(PermanentError):
    """A parameter, label value or payload is not acceptable."""


class NotFound(PermanentError):
    """The object asked for does not exist (HTTP 404)."""


class Forbidden(PermanentError):
    """Credentials are missing or lack a permission (HTTP 401/403)."""


class GuardrailRefused(PermanentError):
    """A destructive action was refused by the guard (protected namespace, blast radius, cooldown, ...)."""


class ConfigError(PermanentError):
    """Settings or a config file are wrong."""


def is_transient(exc: BaseException) -> bool:
    """Retry condition shared by Prefect task retries and our own retry loops."""
    return isinstance(exc, TransientError)


def from_http_status(status: int, what: str, body: str = "", retry_after: float | None = None) -> RunbookError:
    """Map an HTTP status of an upstream API to the hierarchy, with an actionable message."""
    detail = f": {body[:300]}" if body else ""
    if status == 429:
        return TransientError(f"{what} was rate limited (HTTP 429){detail}", retry_after=retry_after)
    if status >= 500 or status == 408:
        return TransientError(f"{what} failed with HTTP {status}{detail}", retry_after=retry_after)
    if status in (401, 403):
        return Forbidden(
            f"{what} was denied (HTTP {status}){detail}",
            hint="check the credentials and that the role grants this verb on this resource",
        )
    if status == 404:
        return NotFound(f"{what}: not found (HTTP 404){detail}", hint="check the namespace and name")
    if status == 409:
        return TransientError(f"{what}: conflict (HTTP 409){detail}")
    if status in (400, 422):
        return InvalidInput(f"{what} was rejected as invalid (HTTP {status}){detail}")
    return PermanentError(f"{what} failed with HTTP {status}{detail}")


class AuthError(Exception):
    """An inbound request (webhook, Slack interaction) failed authentication; the receiver answers 401 with a
    JSON error body. Not a RunbookError: it is the caller's request that is refused, not an operation of ours."""

    def __init__(self, detail: str, *, scheme: str = "Bearer") -> None:
        super().__init__(detail)
        self.detail = detail
        self.scheme = scheme
