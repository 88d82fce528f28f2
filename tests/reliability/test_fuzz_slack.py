"""Fuzzing POST /v1/slack/interactions, in-process, with the approval desk on (local Slack, runs in memory).

Hostile interaction payloads (wrong types, hostile text, huge and nested values, other interaction types),
signed correctly most of the time so the deep paths run, and raw bytes, bad signatures and odd headers.
The contract: never a 5xx; every 4xx is the receiver's JSON error; anything unsigned, forged or stale is a
401 (or 413/400 for its size) and queues nothing; whatever is queued is decided without an exception; and no fuzzed press resumes
the paused run (none carries its approval nonce from an allowlisted user)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from k8s_runbooks.alerts.app import create_app
from k8s_runbooks.alerts.spool import Spool
from k8s_runbooks.chatops.desk import ApprovalDesk, RunView
from k8s_runbooks.chatops.policy import parse_policies
from k8s_runbooks.chatops.slack import SlackClient
from tests.helpers.paused_runs import PausedRuns
from tests.helpers.slack_api import LocalSlack
from tests.reliability import strategies as S
from tests.reliability.conftest import MAX_BODY, TALLY, AsgiClient, fuzz_settings, make_router
from tests.reliability.receiver_checks import check_error_body, snapshot

PATH = "/v1/slack/interactions"
TOKEN, SECRET, CHANNEL = "xoxb-fuzz", "fuzz-slack-signing-secret", "C0FUZZ"
RUN, NONCE = "11111111-2222-4333-8444-555555555555", "f00d"
POLICIES = parse_policies(f"""
version: 1
policies:
  - {{name: fuzz, namespaces: ["shop"], channel: {CHANNEL}, approvers: {{users: [U0ALICE], groups: [S0ONCALL]}}, two_person_min_pods: 2}}
""")
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def desk_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AsgiClient, ApprovalDesk, PausedRuns, Spool, LocalSlack]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-slack")
    with LocalSlack(TOKEN, SECRET, {CHANNEL}, groups={"S0ONCALL": ["U0CAROL"]}) as slack:
        runs = PausedRuns({RUN: RunView(RUN, "PAUSED", f"{NONCE}-1", time.time() + 86_400, "shop", None, True)})
        desk = ApprovalDesk(SecretStr(SECRET), POLICIES, runs, tmp / "desk.sqlite3",
                            slack=SlackClient(TOKEN, slack.api_url, timeout=2, attempts=1))
        spool = Spool(tmp / "spool.sqlite3")
        client = AsgiClient(create_app(make_router(), spool, approvals=desk, max_body_bytes=MAX_BODY))
        yield client, desk, runs, spool, slack
        client.close()
        spool.close()


TEXT = st.one_of(S.HOSTILE, st.text(max_size=20))
USER_ID = st.sampled_from(["U0ALICE", "U0CAROL", "U0MALLORY", "W0GUEST"] * 4 + ["", "u0lower", "U" * 40, "U0\n"])
VALUE = st.one_of(
    st.builds(lambda r, n, a, p: json.dumps({"r": r, "n": n, "a": a, "p": p}),
              st.one_of(st.just(RUN), TEXT), st.one_of(st.sampled_from(["other", "", "f00", "f00d0"]), TEXT),
              st.one_of(st.none(), st.sampled_from(["rollout_undo", "delete_pods"]), S.JUNK),
              st.one_of(st.integers(-5, 10**12), S.JUNK)),
    TEXT, st.just("{}"), st.just("null"), st.just('{"r": null, "n": null, "a": null}'),
)
ACTION = st.fixed_dictionaries({"action_id": st.one_of(st.sampled_from(["approve:rollout_undo", "approve:delete_pods", "reject",
                                                                          "open-run", "approve:"]), TEXT),
                                "value": VALUE}, optional={"type": st.just("button"), "block_id": TEXT})


def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 10) -> Any:
    """`good`, and `bad` about once in `one_in` draws (one_of with repeated branches does not weigh them)."""
    return draw(bad) if draw(st.integers(1, one_in)) == 1 else draw(good)


@st.composite
def interaction(draw: st.DrawFn) -> Any:
    if draw(st.integers(1, 20)) == 1:
        return draw(S.JUNK)
    data: dict[str, Any] = {
        "type": _mostly(draw, st.just("block_actions"), st.one_of(st.sampled_from(["view_submission", "shortcut", ""]), S.JUNK)),
        "user": _mostly(draw, st.fixed_dictionaries({"id": USER_ID}, optional={"username": TEXT, "name": TEXT}), S.JUNK),
        "actions": _mostly(draw, st.lists(ACTION, min_size=1, max_size=1), st.one_of(st.lists(S.maybe_junk(ACTION), max_size=3), S.JUNK)),
    }
    for key, strategy in (("channel", st.fixed_dictionaries({"id": st.one_of(st.just(CHANNEL), TEXT)})),
                          ("container", st.fixed_dictionaries({"message_ts": TEXT})),
                          ("message", st.fixed_dictionaries({"blocks": st.lists(st.dictionaries(TEXT, S.JUNK, max_size=2), max_size=2)})),
                          ("trigger_id", TEXT)):
        if draw(st.booleans()):
            data[key] = _mostly(draw, strategy, S.JUNK)
    return data


SIGNING = st.sampled_from(["good"] * 12 + ["forged", "stale", "future", "missing", "garbage-ts"])


_AGE = iter(range(10**9))


def _headers(slack: LocalSlack, body: bytes, signing: str, ctype: str | None) -> dict[str, str]:
    # Hypothesis draws the same body more than once: a different timestamp (within the window) keeps a repeat
    # from being refused as a replay, so the deep path runs.
    now = int(time.time()) - next(_AGE) % 200
    headers = {
        "good": lambda: slack.sign(body, now), "forged": lambda: slack.sign(body, now, secret="not-the-secret"),
        "stale": lambda: slack.sign(body, int(time.time()) - 400), "future": lambda: slack.sign(body, int(time.time()) + 400),
        "missing": lambda: {}, "garbage-ts": lambda: {**slack.sign(body, now), "X-Slack-Request-Timestamp": "soon"},
    }[signing]()
    headers.pop("Content-Type", None)
    if ctype is not None:
        headers["Content-Type"] = ctype
    return headers


def _send(env: tuple[AsgiClient, ApprovalDesk, PausedRuns, Spool, LocalSlack], body: bytes, headers: dict[str, str],
          signing: str, tally: str) -> None:
    client, desk, runs, spool, _ = env
    before = snapshot(spool)
    try:
        resp = client.post(PATH, content=body, headers=headers)
    except UnicodeEncodeError:
        return
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 400:
        check_error_body(resp)
    elif resp.json()["queued"]:
        TALLY["slack presses decided (fuzz)"] += 1
    if signing != "good":  # refused before it is read as a press (401), or for its size / Content-Length (413, 400)
        assert resp.status_code in (400, 401, 413), (signing, resp.status_code, resp.text[:300])
        assert desk.pending() == 0
    desk.process_pending()  # every queued press is decided without an exception
    assert runs.inputs == {} and runs.runs[RUN].state == "PAUSED", runs.inputs
    assert snapshot(spool) == before  # nothing about alerts changes
    TALLY[f"receiver hypothesis slack {tally}"] += 1
    TALLY[f"receiver status {resp.status_code}"] += 1


@fuzz_settings(0.06)
@given(payload=interaction(), signing=SIGNING,
       ctype=st.sampled_from([FORM] * 8 + [None, "application/json", "FORM", FORM + "; charset=utf-8"]))
def test_interaction_payloads(desk_app: Any, payload: Any, signing: str, ctype: str | None) -> None:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    _send(desk_app, body, _headers(desk_app[4], body, signing, ctype), signing, "payload")


@fuzz_settings(0.03)
@given(body=st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"payload=", b"payload=%7B%7D", b"payload=null",
                                                                b"payload=" + b"%5B" * 3000, b"a=1&" * 50 + b"payload=1",
                                                                b"x" * (MAX_BODY + 1)])),
       signing=SIGNING, ctype=st.one_of(st.just(FORM), st.none(), st.text(max_size=20)),
       extra=st.dictionaries(st.sampled_from(["X-Slack-Retry-Num", "Content-Length", "X-Slack-Signature"]), st.text(max_size=12), max_size=2))
def test_raw_bodies_and_headers(desk_app: Any, body: bytes, signing: str, ctype: str | None, extra: dict[str, str]) -> None:
    headers = {**_headers(desk_app[4], body, signing, ctype), **extra}
    if "X-Slack-Signature" in extra or "Content-Length" in extra:
        signing = "tampered"  # a replaced signature is a forgery; a lying Content-Length changes what is read
    _send(desk_app, body, headers, signing if signing == "good" else "bad", "raw")
