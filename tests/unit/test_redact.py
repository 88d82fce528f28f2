"""Redaction: a corpus of secret formats (none may survive) and ordinary log lines (must stay unchanged)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8s_runbooks.redact import redact, redact_lines

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAx4fSecretPemBody0123456789abcdefABCDEF\n"
    "q0Zk7Yd2PemSecondLine+/==\n"
    "-----END RSA PRIVATE KEY-----"
)

# (line, the secret that must not survive, expected kind in the replacement)
CORPUS: list[tuple[str, str, str]] = [
    ("GET /api Authorization: Bearer abcDEF123456ghiJKL789", "abcDEF123456ghiJKL789", "authorization"),
    ("curl -H 'Authorization: Basic dXNlcjpodW50ZXIy' http://x", "dXNlcjpodW50ZXIy", "authorization"),
    ('{"headers": {"authorization": "Token 9f8e7d6c5b4a39281706"}}', "9f8e7d6c5b4a39281706", "authorization"),
    ("sending request with bearer Zm9vYmFyYmF6cXV4MTIzNDU2", "Zm9vYmFyYmF6cXV4MTIzNDU2", "bearer"),
    ("connecting to postgres://checkout:s3cr3t-pa55@db.shop:5432/orders", "s3cr3t-pa55", "url_password"),
    ("redis url=redis://default:r3d1sPw%40x@cache:6379/0", "r3d1sPw%40x", "url_password"),
    ("amqp://guest:gu3st-pw@rabbit/", "gu3st-pw", "url_password"),
    ("login password=hunter2 user=bob", "hunter2", "secret"),
    ("DB_PASSWD=Tr0ub4dor&3", "Tr0ub4dor", "secret"),
    ("client_secret: 8c6976e5b5410415bde908bd4dee15df", "8c6976e5b5410415bde908bd4dee15df", "secret"),
    ('config {"password": "correct horse battery"}', "correct horse battery", "secret"),
    ("settings token='tok_live_abcdef123456'", "tok_live_abcdef123456", "secret"),
    ("API_KEY=0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef", "secret"),
    ("apikey: QWxhZGRpbjpvcGVuIHNlc2FtZQ", "QWxhZGRpbjpvcGVuIHNlc2FtZQ", "secret"),
    ("s3 access_key=minioadmin123 ok", "minioadmin123", "secret"),
    ("AWS key id AKIAIOSFODNN7EXAMPLE in use", "AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("session creds ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "aws_access_key_id"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key"),
    ("maps key AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "gcp_api_key"),
    ("gh ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github_token"),
    ("oauth gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "github_token"),
    ("app ghs_16C7e42F292c6912E7710c838347Ae178B4a", "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "github_token"),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF", "github_pat_11ABCDEFG0123456789_abcdefghij", "github_token"),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "slack_token"),
    ("user token xoxp-2222-3333-4444-deadbeefcafe", "xoxp-2222-3333-4444-deadbeefcafe", "slack_token"),
    (
        "posting to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "slack_webhook",
    ),
    ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
    ("restricted rk_live_51H8abcDEFghiJKLmnoPQR", "rk_live_51H8abcDEFghiJKLmnoPQR", "stripe_key"),
    (
        "mail 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",
        "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",
        "sendgrid_key",
    ),
    ("twilio SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef", "twilio_key"),
    (
        "sentry dsn https://e3a1b2c4d5e6f708192a3b4c5d6e7f80@o123456.ingest.sentry.io/42",
        "e3a1b2c4d5e6f708192a3b4c5d6e7f80",
        "sentry_dsn",
    ),
    (
        "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "jwt",
    ),
    (f"loaded key:\n{PEM}\nstarting server", "PemSecondLine", "private_key"),
    (
        '{"type": "service_account", "private_key_id": "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c", '
        '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n"}',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "private_key",
    ),
    ("tail of log: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJ", "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJ", "private_key"),
    ("gitlab glpat-xxxxxxxxxxxxxxxxxxxx1234", "glpat-xxxxxxxxxxxxxxxxxxxx1234", "gitlab_token"),
    ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_token"),
    ("openai sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-abcdefghijklmnopqrstuvwxyz012345", "api_key"),
    ("psql --password s3cretCLI --host db", "s3cretCLI", "secret"),
    ("X-Api-Key: 5f4dcc3b5aa765d61d8327deb882cf99", "5f4dcc3b5aa765d61d8327deb882cf99", "secret"),
    ("AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6", "secret"),
    ("gcloud ya29.a0AfH6SMBx3kQ_abcdefghijklmnopqrstuvw", "ya29.a0AfH6SMBx3kQ_abcdefghijklmnopqrstuvw", "gcp_oauth_token"),
]

ORDINARY = [
    "2026-11-25T11:46:00Z INFO checkout listening on :8080",
    "GET /healthz 200 0.8ms",
    "worker started pid=4242 max_tokens=5 password_length=12",
    "authorization failed for user bob: role lacks verb delete on pods",
    "connecting to http://payments.shop.svc:8080/charge",
    "fetched https://example.com/a@b?q=1",
    "CrashLoopBackOff: back-off 10s restarting failed container",
    "panic: runtime error: index out of range [3] with length 3",
    'json {"level": "info", "msg": "order placed", "order_id": 1234}',
    "memory 256Mi exceeded, container OOMKilled (exit 137)",
    "image sandbox/shop:1 pulled in 1.2s",
    "email from alice@example.com queued",
    "",
]


@pytest.mark.parametrize(("line", "secret", "kind"), CORPUS, ids=[c[2] + f"-{i}" for i, c in enumerate(CORPUS)])
def test_secret_formats_never_survive(line: str, secret: str, kind: str) -> None:
    out, count = redact(line)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert count >= 1


def test_corpus_is_large_enough() -> None:
    assert len({kind for _, _, kind in CORPUS}) >= 20 and len(CORPUS) >= 30


def test_url_password_keeps_the_user_and_host() -> None:
    out, count = redact("postgres://checkout:s3cr3t-pa55@db.shop:5432/orders")
    assert out == "postgres://checkout:[REDACTED:url_password]@db.shop:5432/orders"
    assert count == 1


def test_bearer_keeps_scheme_and_counts_once() -> None:
    out, count = redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXNpZw")
    assert out.startswith("Authorization: Bearer [REDACTED:")
    assert count == 1


def test_json_shape_is_kept() -> None:
    out, _ = redact('{"user": "bob", "password": "p@ss w0rd"}')
    assert out == '{"user": "bob", "password": "[REDACTED:secret]"}'


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_lines_are_unchanged(line: str) -> None:
    assert redact(line) == (line, 0)


def test_redact_lines_handles_multiline_pem() -> None:
    lines = ["boot", *PEM.split("\n"), "ready"]
    out, count = redact_lines(lines)
    assert out[0] == "boot" and out[-1] == "ready"
    assert not any("PemSecondLine" in line or "MIIEowIBAAK" in line for line in out)
    assert count == 1


@pytest.mark.parametrize("value", [None, b"token=abc\xff\xfe123", 12345, "\x00\x01password=\x00x", "=" * 5000 + ":" * 5000])
def test_odd_input_never_raises(value: object) -> None:
    out, count = redact(value)
    assert isinstance(out, str) and count >= 0


@pytest.mark.timeout(120)
def test_pathological_input_stays_linear() -> None:
    # A quadratic pattern would hang here for hours; pytest-timeout fails the test instead of asserting a timing.
    hostile = "a" * 200_000 + " password" * 10_000 + "_" * 100_000 + "://" + "x:" * 50_000
    out, _ = redact(hostile)
    assert out.startswith("a" * 1000)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_never_raises_and_is_idempotent(text: str) -> None:
    once, _ = redact(text)
    twice, count = redact(once)
    assert twice == once and count == 0
