"""Property-based fuzzing of every alert-receiver endpoint, in-process (ASGI), against the real app, routes
and SQLite spool. The contract checked after each case is in `receiver_checks`."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from k8s_runbooks.alerts.auth import sentry_signature
from k8s_runbooks.alerts.spool import Spool
from tests.reliability import strategies as S
from tests.reliability.conftest import AsgiClient, GRAFANA_PASSWORD, GRAFANA_USER, MAX_BODY, SENTRY_SECRET, TALLY, TOKEN, fuzz_settings
from tests.reliability.receiver_checks import check, check_error_body, dumps, snapshot

AM, GRAFANA, SENTRY = "/v1/alerts/alertmanager", "/v1/alerts/grafana", "/v1/alerts/sentry"
JSON = "application/json"
BASIC = "Basic " + base64.b64encode(f"{GRAFANA_USER}:{GRAFANA_PASSWORD}".encode()).decode()

# Mostly the right credentials (so parsing and routing run), sometimes wrong, missing or malformed ones.
AUTH_HEADER = st.one_of(*[st.just(f"Bearer {TOKEN}")] * 6, st.sampled_from(
    [None, "", "Bearer", "Bearer wrong", f"bearer  {TOKEN} ", f"Basic {TOKEN}", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
     "Token x", f"Bearer {TOKEN}\x00", "Bearer \u00e9t\u00e9"]), st.text(max_size=20))
CONTENT_TYPE = st.one_of(*[st.just(JSON)] * 8, st.sampled_from(
    [None, "", "text/plain", "application/json; charset=utf-8", "APPLICATION/JSON", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/jsonx"]))


def _send(client: AsgiClient, spool: Spool, path: str, body: bytes, headers: dict[str, str | None], tally: str) -> None:
    before = snapshot(spool)
    clean = {k: v for k, v in headers.items() if v is not None}
    try:
        resp = client.post(path, content=body, headers=clean)
    except UnicodeEncodeError:
        return  # the HTTP client cannot even put such a header on the wire; not a request the server can get
    outcome = check(resp, spool, before, path, body)
    TALLY[f"receiver hypothesis {tally}"] += 1
    TALLY[f"receiver status {outcome}"] += 1


@fuzz_settings(0.30)
@given(payload=S.alertmanager_payload(), auth=AUTH_HEADER, ctype=CONTENT_TYPE)
def test_alertmanager_webhook(receiver: tuple[AsgiClient, Spool], payload: dict[str, Any], auth: str | None, ctype: str | None) -> None:
    client, spool = receiver
    _send(client, spool, AM, dumps(payload), {"Authorization": auth, "Content-Type": ctype}, "alertmanager")


@fuzz_settings(0.17)
@given(payload=S.grafana_payload(), auth=st.one_of(AUTH_HEADER, st.just(BASIC), st.just(BASIC)), ctype=CONTENT_TYPE)
def test_grafana_webhook(receiver: tuple[AsgiClient, Spool], payload: dict[str, Any], auth: str | None, ctype: str | None) -> None:
    client, spool = receiver
    _send(client, spool, GRAFANA, dumps(payload), {"Authorization": auth, "Content-Type": ctype}, "grafana")


@fuzz_settings(0.17)
@given(payload=S.sentry_payload(), signed=st.sampled_from(["good", "good", "good", "good", "bad", "missing"]),
       resource=st.sampled_from(["event_alert", "event_alert", "event_alert", None, "installation", "issue", ""]), ctype=CONTENT_TYPE)
def test_sentry_webhook(receiver: tuple[AsgiClient, Spool], payload: dict[str, Any], signed: str, resource: str | None,
                        ctype: str | None) -> None:
    client, spool = receiver
    body = dumps(payload)
    signature = {"good": sentry_signature(body, SENTRY_SECRET), "bad": sentry_signature(body, "other"), "missing": None}[signed]
    _send(client, spool, SENTRY, body, {"Sentry-Hook-Signature": signature, "Sentry-Hook-Resource": resource, "Content-Type": ctype}, "sentry")


RAW_BODY = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"null", b"[]", b"{}", b"1e999999", b'{"version": "4"', b'"\xff\xfe"', b"\xef\xbb\xbf{}",
                     b'{"alerts": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"x" * (MAX_BODY + 1)]),
)


@fuzz_settings(0.18)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       path=st.one_of(st.sampled_from([AM, GRAFANA, SENTRY, "/healthz", "/metrics", "/openapi.json", "/v1/alerts", "/"]),
                      st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(lambda p: "/" + p.lstrip("/"))),
       body=RAW_BODY, auth=AUTH_HEADER, ctype=CONTENT_TYPE, length=st.sampled_from([None, None, None, "abc", "-1", "99999999999"]))
def test_any_request_to_any_path(receiver: tuple[AsgiClient, Spool], method: str, path: str, body: bytes, auth: str | None,
                                 ctype: str | None, length: str | None) -> None:
    """Raw bytes, wrong methods, unknown paths, lying Content-Length: never a 5xx, never a stored row."""
    client, spool = receiver
    before = snapshot(spool)
    headers = {k: v for k, v in {"Authorization": auth, "Content-Type": ctype, "Content-Length": length}.items() if v is not None}
    if length is not None and method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        headers.pop("Content-Length")
    try:
        resp = client.request(method, path, content=body if method not in ("GET", "HEAD") else None, headers=headers)
    except UnicodeEncodeError:
        return
    assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400 and method != "HEAD":
        check_error_body(resp)
    if resp.status_code == 200 and method == "POST" and path in (AM, GRAFANA, SENTRY):
        check(resp, spool, before, path, body)
    else:
        assert snapshot(spool) == before, f"{method} {path} -> {resp.status_code} changed the spool"
    TALLY["receiver hypothesis raw"] += 1
    TALLY[f"receiver status {resp.status_code}"] += 1
