"""Secret redaction for anything collected (logs, events, messages) before it is stored or published.

`redact(text) -> (text, count)` replaces each secret with `[REDACTED:<kind>]` and counts the replacements.
Specific provider formats run first, the generic `key=value` rule last, so a value already replaced is
never counted twice. Every quantifier is bounded: a hostile 1 MB line costs linear time, never a hang.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_MARK = "[REDACTED:{}]"


def _mark(kind: str) -> str:
    return _MARK.format(kind)


# Each rule: (kind, compiled pattern, replacement builder). The builder gets the match and returns the new text.
Replacer = Callable[[re.Match[str]], str]


def _whole(kind: str) -> Replacer:
    return lambda m: _mark(kind)


def _keep_prefix(kind: str, group: str = "prefix", suffix: str | None = None) -> Replacer:
    def build(m: re.Match[str]) -> str:
        tail = m.group(suffix) if suffix else ""
        return f"{m.group(group)}{_mark(kind)}{tail or ''}"

    return build


_SECRET_KEY_WORDS = (
    r"password|passwd|pwd|passphrase|credentials?|secret|token|api[_ -]?key|apikey|access[_-]?key|secret[_-]?key|"
    r"private[_-]?key|account[_-]?key|auth[_-]?key|client[_-]?secret|session[_-]?id|"
    r"signing[_-]?key|encryption[_-]?key"
)

_RULES: list[tuple[str, re.Pattern[str], Replacer]] = [
    # PEM private key blocks, also with literal "\n" escapes (inside JSON) and truncated at the end of a log.
    (
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----"
            # The body never holds a double quote: a truncated key inside JSON must not reach for the END line
            # of another key further down the document.
            r"(?:[^\"]{0,20000}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----|[A-Za-z0-9+/=\s\\]{0,20000})"
        ),
        _whole("private_key"),
    ),
    # GCP service-account JSON: "private_key": "..." and "private_key_id": "..."
    (
        "private_key",
        re.compile(r'(?P<prefix>"private_key(?:_id)?"\s*:\s*")(?!\[REDACTED)(?:[^"\\]|\\.){1,20000}(?P<q>")'),
        _keep_prefix("private_key", suffix="q"),
    ),
    (
        "slack_webhook",
        re.compile(r"(?P<prefix>https://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]{8,300}"),
        _keep_prefix("slack_webhook"),
    ),
    # Sentry DSN: the public key is the URL's user part (32 hex), optionally with a legacy secret.
    (
        "sentry_dsn",
        re.compile(r"(?P<prefix>\b[a-z][a-z0-9+.-]{0,20}://)[0-9a-f]{32}(?::[0-9a-f]{32})?(?P<at>@)"),
        _keep_prefix("sentry_dsn", suffix="at"),
    ),
    # scheme://user:password@host -> keep the user, mask the password.
    (
        "url_password",
        re.compile(r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]{0,20}://[^\s:/@\[\]]{0,256}:)(?!\[REDACTED)[^\s/\"']{1,512}(?P<at>@)"),
        _keep_prefix("url_password", suffix="at"),
    ),
    # Authorization / Proxy-Authorization headers (plain, JSON, or Python-dict style); keep the scheme.
    (
        "authorization",
        re.compile(
            r"(?i)(?P<prefix>\b(?:proxy-)?authorization[\"']?\s{0,5}[:=]\s{0,5}[\"']?"
            r"(?:(?:bearer|basic|token|digest|apikey|negotiate|aws4-hmac-sha256)\s{1,5})?)"
            # A backslash starting a JSON escape (\n, \") ends the value: inside JSON text it is the next log line
            # or the closing quote, and eating it would break the JSON.
            r"(?!\[REDACTED)(?:[^\r\n\"'\\]|\\(?![\\\"nrt/u])){1,4000}"
        ),
        _keep_prefix("authorization"),
    ),
    (
        "bearer",
        re.compile(r"(?i)(?P<prefix>\bbearer\s{1,5})(?!\[REDACTED)[A-Za-z0-9\-._~+/]{12,4000}=*"),
        _keep_prefix("bearer"),
    ),
    ("aws_access_key_id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"), _whole("aws_access_key_id")),
    (
        "aws_secret_key",
        re.compile(
            r"(?i)(?P<prefix>\baws[_-]?(?:secret[_-]?(?:access[_-]?)?key|secret)[\"']?\s{0,5}[:=]\s{0,5}[\"']?)"
            r"[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
        ),
        _keep_prefix("aws_secret_key"),
    ),
    ("gcp_api_key", re.compile(r"\bAIza[0-9A-Za-z\-_]{35}(?![0-9A-Za-z\-_])"), _whole("gcp_api_key")),
    ("gcp_oauth_token", re.compile(r"\bya29\.[0-9A-Za-z\-_]{20,2000}"), _whole("gcp_oauth_token")),
    ("github_token", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b"), _whole("github_token")),
    ("github_token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"), _whole("github_token")),
    # GitLab: personal/project/group (glpat), runner (glrt), deploy (gldt), trigger (glptt), feed, OAuth app, CI job, ...
    ("gitlab_token", re.compile(r"\bgl(?:pat|rt|dt|ptt|ft|soat|oas|cbt|imt|agent|ffct)-[A-Za-z0-9_\-]{20,100}\b"), _whole("gitlab_token")),
    ("slack_token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,250}"), _whole("slack_token")),
    ("slack_token", re.compile(r"\bxapp-\d-[A-Za-z0-9-]{10,250}"), _whole("slack_token")),
    ("discord_webhook", re.compile(r"(?P<prefix>https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{5,30}/)[A-Za-z0-9_\-]{20,200}"),
     _keep_prefix("discord_webhook")),
    # Sentry org/user auth tokens (the DSN's key is public-ish and handled above).
    ("sentry_token", re.compile(r"\bsntry[su]_[A-Za-z0-9_=+/\-]{20,400}"), _whole("sentry_token")),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,60}\b"), _whole("huggingface_token")),
    # HashiCorp Vault service/batch/recovery tokens (and the legacy s./b. forms only after a "vault"-ish word is too
    # vague to match; the generic token= rule covers those).
    ("vault_token", re.compile(r"\bhv[sbr]\.[A-Za-z0-9_\-]{20,500}"), _whole("vault_token")),
    ("databricks_token", re.compile(r"\bdapi[0-9a-f]{32}(?:-\d)?\b"), _whole("databricks_token")),
    ("telegram_bot_token", re.compile(r"\b\d{6,12}:AA[A-Za-z0-9_\-]{30,40}\b"), _whole("telegram_bot_token")),
    # Entra ID (Azure AD) client secrets: 3 chars, a digit, "Q~", then 31-34 chars.
    ("azure_client_secret", re.compile(r"(?<![A-Za-z0-9_~.\-])[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}(?![A-Za-z0-9_~.\-])"),
     _whole("azure_client_secret")),
    # Azure SAS (and any signed URL's) signature query parameter.
    ("signed_url", re.compile(r"(?i)(?P<prefix>[?&](?:sig|x-amz-signature|x-goog-signature|signature)=)(?!\[REDACTED)[^&\s\"'#]{8,2000}"),
     _keep_prefix("signed_url")),
    # Base64 of "-----BEGIN" (a PEM inside a Kubernetes Secret's data, a values file, an env var).
    ("private_key", re.compile(r"\bLS0tLS1CRUdJTi[A-Za-z0-9+/=]{20,20000}"), _whole("private_key")),
    # Docker config.json / .dockerconfigjson: "auth": "<base64 user:password>"
    ("docker_auth", re.compile(r'(?P<prefix>"auth"\s*:\s*")(?!\[REDACTED)[A-Za-z0-9+/=]{8,4000}(?P<q>")'),
     _keep_prefix("docker_auth", suffix="q")),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,250}\b"), _whole("stripe_key")),
    ("stripe_key", re.compile(r"\bwhsec_[A-Za-z0-9]{16,250}\b"), _whole("stripe_key")),
    ("sendgrid_key", re.compile(r"\bSG\.[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}\b"), _whole("sendgrid_key")),
    ("twilio_key", re.compile(r"\b(?:SK|AC)[0-9a-f]{32}\b"), _whole("twilio_key")),
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), _whole("npm_token")),
    ("pypi_token", re.compile(r"\bpypi-AgE[A-Za-z0-9_\-]{50,1000}"), _whole("pypi_token")),
    ("openai_key", re.compile(r"\bsk-(?:proj-|ant-[a-z0-9]{2,10}-)?[A-Za-z0-9_\-]{20,250}"), _whole("api_key")),
    ("mailgun_key", re.compile(r"\bkey-[0-9a-f]{32}\b"), _whole("mailgun_key")),
    ("digitalocean_token", re.compile(r"\bdo[por]_v1_[a-f0-9]{64}\b"), _whole("digitalocean_token")),
    ("shopify_token", re.compile(r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"), _whole("shopify_token")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,4000}"), _whole("jwt")),
    # Command-line flags: --password hunter2, --token=abc
    (
        "secret",
        re.compile(r"(?i)(?P<prefix>(?<![\w-])--?(?:password|passwd|token|secret|api-key|apikey|access-key)(?:=|\s{1,5}))(?!\[REDACTED)(?!-)[^\s\"']{1,1000}"),
        _keep_prefix("secret"),
    ),
]

# Lower-case literals at least one of which every match of a rule contains (checked against the current text, so
# skipping a rule never changes the result). `str in str` costs ~1/100 of a regex scan: a log page without
# "aiza" skips the GCP key scan. Rules not listed always run.
_ANCHORS: dict[str, tuple[str, ...]] = {}


def _anchor(kind: str, index: int, *literals: str) -> None:
    matching = [p for k, p, _ in _RULES if k == kind]
    _ANCHORS[matching[index].pattern] = literals


for _kind, _lits in (
    ("slack_webhook", ("hooks.slack",)), ("sentry_dsn", ("://",)), ("url_password", ("://",)),
    ("authorization", ("authorization",)), ("bearer", ("bearer",)),
    ("aws_access_key_id", ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "abia", "acca", "a3t")),
    ("aws_secret_key", ("aws",)), ("gcp_api_key", ("aiza",)), ("gcp_oauth_token", ("ya29.",)),
    ("gitlab_token", ("gl",)), ("discord_webhook", ("discord",)), ("sentry_token", ("sntry",)),
    ("huggingface_token", ("hf_",)), ("vault_token", ("hvs.", "hvb.", "hvr.")), ("databricks_token", ("dapi",)),
    ("telegram_bot_token", (":aa",)), ("azure_client_secret", ("q~",)), ("signed_url", ("sig",)),
    ("docker_auth", ('"auth"',)), ("sendgrid_key", ("sg.",)), ("npm_token", ("npm_",)), ("pypi_token", ("pypi-age",)),
    ("openai_key", ("sk-",)), ("mailgun_key", ("key-",)), ("digitalocean_token", ("_v1_",)), ("shopify_token", ("shp",)),
    ("jwt", ("eyj",)), ("secret", ("password", "passwd", "token", "secret", "api-key", "apikey", "access-key")),
):
    _anchor(_kind, 0, *_lits)
_anchor("private_key", 0, "-----begin")
_anchor("private_key", 1, '"private_key')
_anchor("private_key", 2, "ls0tls1crudjti")
_anchor("github_token", 0, "ghp_", "gho_", "ghu_", "ghs_", "ghr_")
_anchor("github_token", 1, "github_pat_")
_anchor("slack_token", 0, "xox")
_anchor("slack_token", 1, "xapp-")
_anchor("stripe_key", 0, "_live_", "_test_")
_anchor("stripe_key", 1, "whsec_")

# The same for case-sensitive rules whose literals are too common in lower case: looked for in the text itself.
_CASE_ANCHORS: dict[str, tuple[str, ...]] = {[p for k, p, _ in _RULES if k == "twilio_key"][0].pattern: ("SK", "AC")}

# How many line breaks a match of the rule can hold (its `\s{0,5}` gaps). A match contains one of its anchors, so
# it lies within that many lines of an anchor's line: the rule is run on those lines only (a page of logs has a
# few), with the same result as on the whole text. Rules not listed (PEM bodies, unbounded `\s*`) scan it all.
_REACH: dict[str, int] = {}
for _kind, _pattern, _ in _RULES:
    if _kind not in ("private_key", "docker_auth", "authorization", "bearer", "aws_secret_key", "secret"):
        _REACH[_pattern.pattern] = 0
for _kind, _lines in (("authorization", 15), ("bearer", 5), ("aws_secret_key", 10), ("secret", 5)):
    _REACH[[p for k, p, _ in _RULES if k == _kind][0].pattern] = _lines
_REACH[[p for k, p, _ in _RULES if k == "private_key"][2].pattern] = 0  # the base64 PEM header: one token


# Generic `<secret-ish key> = value`, `key: value`, `"key": "value"`, `key='value'`. The key must END with a
# secret word (so `max_tokens=5` and `password_length=12` stay as they are).
_GENERIC = re.compile(
    r"(?i)(?P<prefix>(?<![A-Za-z0-9])[\w.-]{0,40}?(?:" + _SECRET_KEY_WORDS + r")[\"']?\s{0,5}(?:=|:(?!//))\s{0,5})"
    r"(?:\"(?P<dq>(?!\[REDACTED)(?:[^\"\\\r\n]|\\.){1,4000})\"|'(?P<sq>(?!\[REDACTED)[^'\r\n]{1,4000})'"
    r"|(?P<bare>(?!\[REDACTED)(?:[^\s\"',;&})\]\\]|\\(?![\\\"nrt/u])){1,4000}))"
)


# The same inside a JSON string that itself holds JSON (a structured log line whose message is a JSON
# document): \"password\": \"value\". The value ends at the next escaped quote.
_ESCAPED_JSON = re.compile(
    r'(?i)(?P<prefix>\\"[\w.-]{0,40}?(?:' + _SECRET_KEY_WORDS + r'|private[_-]?key[_-]?id|auth)\\"\s{0,5}:\s{0,5}\\")'
    r'(?!\[REDACTED)(?:[^"\\\r\n]|\\[^"\r\n]){1,4000}(?P<q>\\")'
)


def _generic(m: re.Match[str]) -> str:
    prefix = m.group("prefix")
    if m.group("dq") is not None:
        return f'{prefix}"{_mark("secret")}"'
    if m.group("sq") is not None:
        return f"{prefix}'{_mark('secret')}'"
    return f"{prefix}{_mark('secret')}"


def redact(text: Any) -> tuple[str, int]:
    """Return `(redacted text, number of secrets replaced)`. Never raises; non-text input is stringified."""
    if text is None:
        return "", 0
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    total = 0
    low = text.lower()
    positional = _positional(text, low)
    for _kind, pattern, build in _RULES:
        key = pattern.pattern
        reach = _REACH.get(key)
        if key in _CASE_ANCHORS and reach is not None:
            text, n = _subn_lines(pattern, build, text, _line_spans(text, _CASE_ANCHORS[key], reach))
        else:
            anchors = _ANCHORS.get(key)
            if anchors is not None and positional and reach is not None:
                text, n = _subn_lines(pattern, build, text, _line_spans(low, anchors, reach))
            elif anchors is not None and not any(a in low for a in anchors):
                continue  # none of the literals every match contains: the scan cannot match
            else:
                text, n = pattern.subn(build, text)
        if n:
            total += n
            low = text.lower()
    text, n = _ESCAPED_JSON.subn(lambda m: f"{m.group('prefix')}{_mark('secret')}{m.group('q')}", text)
    total += n
    if positional:
        text, n = _generic_near_words(text, text.lower() if n else low)
    else:
        text, n = generic_subn(text)
    return text, total + n


# Characters IGNORECASE equates with an ASCII letter although str.lower() does not turn them into it (or turns
# them into two characters): with one of them in the text, literals and positions found in text.lower() are not
# the patterns', and the rules scan the whole text instead.
_CASE_ODD = ("\u0130", "\u0131", "\u017f", "\u212a")


def _positional(text: str, low: str) -> bool:
    return len(low) == len(text) and (text.isascii() or not any(c in text for c in _CASE_ODD))


def _line_spans(hay: str, literals: tuple[str, ...], reach: int) -> list[tuple[int, int]]:
    """(start, end) of the runs of whole lines (end at the line break) within `reach` lines of a line of `hay`
    holding one of `literals`, in order and merged."""
    size = len(hay)
    found: list[tuple[int, int]] = []
    for lit in literals:
        i = hay.find(lit)
        while i >= 0:
            start, line_end = hay.rfind("\n", 0, i) + 1, hay.find("\n", i)
            end = line_end = size if line_end < 0 else line_end
            for _ in range(reach):
                start = hay.rfind("\n", 0, start - 1) + 1 if start > 0 else 0
                nxt = hay.find("\n", end + 1) if end < size else -1
                end = size if nxt < 0 else nxt
            found.append((start, end))
            i = hay.find(lit, line_end + 1) if line_end < size else -1  # the rest of the line adds nothing
    found.sort()
    spans: list[tuple[int, int]] = []
    for start, end in found:
        if spans and start <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _subn_lines(pattern: re.Pattern[str], build: Replacer, text: str, spans: list[tuple[int, int]]) -> tuple[str, int]:
    """`pattern.subn` on the given runs of whole lines only. The same as on the whole text when every match lies in
    one run: at a run's edges the pattern sees a line break either way, which no rule's boundary treats apart from
    the start or end of the text."""
    out: list[str] = []
    last = total = 0
    for start, end in spans:
        piece, n = pattern.subn(build, text[start:end])
        if n:
            out += (text[last:start], piece)
            last, total = end, total + n
    if not total:
        return text, 0
    out.append(text[last:])
    return "".join(out), total


_HINT_WORDS = ("pass", "pwd", "credential", "secret", "token", "key", "session")
_GENERIC_START = re.compile(r"(?i)(?<![A-Za-z0-9])[\w.-]")  # where a _GENERIC match can begin (its first character)
# A generic match begins at most 40 (its prefix) + 11 ("encryption_" before "key") characters before the hint word
# inside its key word, on the same line.
_GENERIC_LEAD = 64


def _generic_near_words(text: str, low: str) -> tuple[str, int]:
    """`_GENERIC.subn(_generic, text)` trying only the few places a match can begin: on the line of a hint word
    (every secret key word holds one), at most _GENERIC_LEAD characters before it. `low` is `text.lower()`, the same
    length (see _positional)."""
    hits = sorted({i for word in _HINT_WORDS for i in _find_all(low, word)})
    out: list[str] = []
    last = tried = total = 0  # positions before `tried` are known not to begin a match
    j = 0
    while j < len(hits):
        q = hits[j]
        if q < last:  # inside a replaced match: a later match begins after it
            j += 1
            continue
        lo = max(last, tried, low.rfind("\n", 0, q) + 1, q - _GENERIC_LEAD)
        m = None
        for start in _GENERIC_START.finditer(text, lo, q + 1):
            m = _GENERIC.match(text, start.start())
            if m is not None:
                break
        if m is None:
            tried, j = q + 1, j + 1
            continue
        out += (text[last:m.start()], _generic(m))
        last, total = m.end(), total + 1  # and this hint again, from the end of the match
    if not total:
        return text, 0
    out.append(text[last:])
    return "".join(out), total


def _find_all(hay: str, word: str) -> list[int]:
    found = []
    i = hay.find(word)
    while i >= 0:
        found.append(i)
        i = hay.find(word, i + 1)
    return found


# Every alternative of _SECRET_KEY_WORDS contains one of these; a line holding none cannot start a generic match.
_GENERIC_HINT = re.compile(r"(?i)pass|pwd|credential|secret|token|key|session")
_GENERIC_REACH_LINES = 12  # a match may run over line breaks only inside its two \s{0,5} gaps (10 newlines at most)


def generic_subn(text: str) -> tuple[str, int]:
    """`_GENERIC.subn` applied only to the lines near a secret word: the same result as on the whole text (a
    match starts on the line of its key word and spans at most _GENERIC_REACH_LINES lines), at a fraction of
    the cost on a page of logs."""
    hits = [m.start() for m in _GENERIC_HINT.finditer(text)]
    if not hits:
        return text, 0
    windows: list[list[int]] = []
    for pos in hits:
        start = text.rfind("\n", 0, pos) + 1
        end = pos
        for _ in range(_GENERIC_REACH_LINES):
            nxt = text.find("\n", end + 1)
            if nxt < 0:
                end = len(text)
                break
            end = nxt
        if windows and start <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)
        else:
            windows.append([start, end])
    out, last, total = [], 0, 0
    for start, end in windows:
        out.append(text[last:start])
        piece, n = _GENERIC.subn(_generic, text[start:end])
        out.append(piece)
        total += n
        last = end
    out.append(text[last:])
    return "".join(out), total


def redact_lines(lines: list[str]) -> tuple[list[str], int]:
    """Redact a list of lines; multi-line secrets (PEM blocks) are handled by joining first."""
    joined, count = redact("\n".join(lines))
    return joined.split("\n") if lines else [], count


_SEPARATOR = "\n\u2063\u2063\n"  # a line no rule matches across (INVISIBLE SEPARATOR), between batched texts


def redact_many(texts: list[str]) -> tuple[list[str], int]:
    """Redact many texts in one pass of the rules (a few hundred event messages cost one scan, not hundreds).
    If a secret spans two texts (the count of pieces changes), each text is redacted on its own instead."""
    if not texts:
        return [], 0
    joined, count = redact(_SEPARATOR.join(texts))
    pieces = joined.split(_SEPARATOR)
    if len(pieces) == len(texts):
        return pieces, count
    out, total = [], 0
    for text in texts:
        red, n = redact(text)
        out.append(red)
        total += n
    return out, total
