"""Redaction scans only the lines where a rule can match (near its anchors, near a secret key word): the result
must be exactly that of every rule over the whole text. A reference written the plain way is compared with
`redact` on generated texts made of secret-shaped fragments, line breaks and the characters that fold oddly."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8s_runbooks import redact as r


def reference(text: str) -> tuple[str, int]:
    """Every rule over the whole text (skipped only where none of its literals occurs), then the generic rule."""
    total = 0
    for _kind, pattern, build in r._RULES:
        anchors = r._ANCHORS.get(pattern.pattern)
        if anchors is not None and not any(a in text.lower() for a in anchors):
            continue
        text, n = pattern.subn(build, text)
        total += n
    text, n = r._ESCAPED_JSON.subn(lambda m: f"{m.group('prefix')}[REDACTED:secret]{m.group('q')}", text)
    total += n
    text, n = r._GENERIC.subn(r._generic, text)
    return text, total + n


FRAGMENTS = [
    "password", "Password", "PASSWD", "pwd", "db_password", "x" * 45 + "_password", "encryption_key", "api key", "apikey",
    "client-secret", "session_id", "token", "secretoken", "credentials", "Authorization", "authorization: ", "Bearer ",
    "bearer\n", "aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE", "--password ",
    "--token=", "=", ": ", ":", "://", "//", "@", "postgres://u:", "https://", "e3a1b2c4d5e6f708192a3b4c5d6e7f80",
    "SK0123456789abcdef0123456789abcdef", "AC", "sk", "glpat-xxxxxxxxxxxxxxxxxxxx1234", "gl", "?sig=", "&signature=",
    "abcdefgh12345678", "hunter2", '"', "'", "\\\"", "\\", "\n", "\n\n", " ", "     ", "\t", ",", ";", "-", "_", ".",
    "\n\u2063\u2063\n", "\u017fecret=", "sess\u0131on", "\u017f", "\u0131", "\u0130", "\u212a", "\u00e9", "\u4e2d", "[REDACTED:secret]", '"auth": "',
    "dXNlcjpodW50ZXIy", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "eyJhbGciOiJIUzI1NiJ9",
    ".eyJzdWIiOiJib2IifQ", ".c2lnbmF0dXJlLXNpZw",
]

texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_scanning_near_anchors_gives_the_whole_text_result(text: str) -> None:
    assert r.redact(text) == reference(text)


@pytest.mark.parametrize("text", [
    # a match spanning line breaks (the rule's \s gaps) whose anchor is on the first line
    "line\nAuthorization:\n\n  Bearer\n  abcDEF123456ghiJKL789\nnext",
    "aws_secret_access_key =\n\n wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "psql --password\n\ns3cretCLI",
    # the longest key a generic match allows before its word (40 characters of prefix, then "encryption_key")
    "x " + "a" * 40 + "encryption_key=abc " + "b" * 41 + "encryption_key=def",
    # two secrets on one line, one key word holding another ("secretoken")
    "secret=a api_key=b secretoken=c token: 'd'",
    # an anchor within reach of another one's line: its own lines count too
    "bearer x\nbearer\n\n\n\n\nabcdefghijklmnop1234",
    # anchors on many lines, matches on a few
    "\n".join(f"gl {i} task-{i} sig{i}" for i in range(50)) + "\nglpat-xxxxxxxxxxxxxxxxxxxx1234\n",
    # characters IGNORECASE folds onto ASCII letters: the whole text is scanned as before
    "\u017fecret=abc\nnothing else here",
    "sess\u0131on_id=abc\nnothing else here",
    "to\u212aen=abc \u0130 pass=x",
])
def test_edge_cases_match_the_whole_text_result(text: str) -> None:
    assert r.redact(text) == reference(text)


def test_the_odd_folding_characters_are_all_known() -> None:
    # _positional trusts text.lower() to place and spell ASCII letters as IGNORECASE sees them, except for these.
    odd = {chr(c) for c in range(0x80, sys.maxunicode + 1) if re.fullmatch("(?i)[a-z0-9]", chr(c))}
    assert odd <= set(r._CASE_ODD)


def test_every_rule_is_either_anchored_by_lines_or_scans_everything() -> None:
    # A rule given a reach must have literals to find its lines by.
    for _kind, pattern, _ in r._RULES:
        if pattern.pattern in r._REACH:
            assert pattern.pattern in r._ANCHORS or pattern.pattern in r._CASE_ANCHORS
