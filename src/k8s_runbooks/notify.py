"""Status updates and escalations to a Slack-compatible incoming webhook.

The webhook URL is a secret (whoever has it can post): it is never logged, never put in an error
message, and masked in httpx's own request log lines.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import httpx
from pydantic import SecretStr

from k8s_runbooks.errors import InvalidInput, PermanentError, TransientError

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_S = 0.5  # 0.5 s, 1 s (+ jitter) between attempts
MAX_TEXT_CHARS = 39_000  # Slack truncates messages beyond 40k characters


class _MaskWebhookUrls(logging.Filter):
    """httpx logs every request with its full URL at INFO; replace our webhook URLs in those records."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: set[str] = set()
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        with self._lock:
            self._urls.add(url)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._urls and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple("<webhook url>" if str(a) in self._urls else a for a in args)
        return True


_mask = _MaskWebhookUrls()
logging.getLogger("httpx").addFilter(_mask)


def send_webhook(
    text: str,
    url: SecretStr | str | None,
    timeout: float = 10.0,
    *,
    blocks: list[dict[str, Any]] | None = None,
    attempts: int = ATTEMPTS,
) -> bool:
    """POST `{"text": text}` (+ `blocks`). Returns False when no URL is set (artifact-only mode), True
    when delivered. Transient failures (connection, timeout, 5xx, 429) are retried a few times, then
    raise TransientError; a rejected payload or a revoked hook (4xx) raises PermanentError at once."""
    secret = url.get_secret_value() if isinstance(url, SecretStr) else url
    if not secret:
        return False
    if not secret.startswith(("http://", "https://")):
        raise InvalidInput("the notification webhook URL is not an http(s) URL", hint="check K8S_RUNBOOKS_NOTIFY_WEBHOOK_URL")
    _mask.add(secret)
    payload: dict[str, Any] = {"text": text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "\n…(truncated)"}
    if blocks:
        payload["blocks"] = blocks

    last: TransientError | None = None
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(max(1, attempts)):
            if attempt:
                delay = BACKOFF_S * 2 ** (attempt - 1)
                if last is not None and last.retry_after:
                    delay = max(delay, min(last.retry_after, 30.0))
                time.sleep(delay * (1 + random.random() * 0.5))
            try:
                _post(client, secret, payload, timeout)
                return True
            except TransientError as exc:
                last = exc
                log.info("webhook delivery attempt %d/%d failed: %s", attempt + 1, attempts, exc.message)
    assert last is not None
    raise last


def _post(client: httpx.Client, url: str, payload: dict[str, Any], timeout: float) -> None:
    try:
        response = client.post(url, json=payload)
    except httpx.TimeoutException:
        # `from None`: httpx exceptions carry the request, and with it the secret URL.
        raise TransientError(f"the notification webhook did not answer within {timeout:g}s") from None
    except httpx.TransportError as exc:
        raise TransientError(f"cannot reach the notification webhook ({type(exc).__name__})") from None
    status = response.status_code
    if 200 <= status < 300:
        return
    body = response.text[:200]
    if status == 429 or status >= 500 or status == 408:
        retry_after = response.headers.get("Retry-After", "")
        raise TransientError(
            f"the notification webhook answered HTTP {status}",
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )
    # 400 invalid_payload, 403 action_prohibited, 404 no_service / 410 channel_is_archived: retrying won't help.
    raise PermanentError(
        f"the notification webhook refused the message (HTTP {status}: {body})",
        hint="check that the webhook is still active and the payload is Slack-compatible",
    )
