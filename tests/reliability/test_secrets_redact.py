"""The secrets corpus against `redact()` directly: every format, in every shape it is stored in (plain log
line, JSON-escaped inside a run record, a multi-line log, a Sentry event body)."""

from __future__ import annotations

import json

import pytest

from k8s_runbooks.redact import redact, redact_lines
from tests.reliability.secrets_corpus import CORPUS, FORMATS, SECRETS
from tests.unit.test_redact import ORDINARY


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_corpus_covers_at_least_30_formats() -> None:
    assert len(FORMATS) >= 30 and len(SECRETS) == len(set(SECRETS))


@pytest.mark.parametrize(("fmt", "line", "secret"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_format_is_redacted(fmt: str, line: str, secret: str) -> None:
    out, count = redact(line)
    assert secret not in out and "[REDACTED:" in out and count >= 1, out
    # JSON-escaped (how the run record and artifacts carry it), then redacted again: still nothing.
    escaped, _ = redact(json.dumps({"message": line}))
    assert secret not in escaped and secret not in json.loads(escaped)["message"], escaped


def test_all_formats_in_one_log_and_one_sentry_event() -> None:
    log = "\n".join(f"2026-11-25T12:00:{i:02d}Z ERROR {line}" for i, (_, line, _) in enumerate(CORPUS))
    lines, count = redact_lines(log.split("\n"))
    assert not _leaks("\n".join(lines)) and count >= len(CORPUS)
    event = {"title": CORPUS[0][1], "culprit": CORPUS[1][1], "message": log,
             "tags": [[name, line] for name, line, _ in CORPUS], "extra": {name: line for name, line, _ in CORPUS}}
    out, _ = redact(json.dumps(event))
    assert not _leaks(out), _leaks(out)
    json.loads(out)  # still valid JSON: redaction keeps the quoting


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_lines_stay_unchanged(line: str) -> None:
    assert redact(line) == (line, 0)
