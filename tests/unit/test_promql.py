"""PromQL builders: validation and escaping (the real-Prometheus behaviour is in tests/prom/)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.prom import promql


def unquote(literal: str) -> str:
    """Go-style unquoting of a PromQL double-quoted string (what Prometheus's parser does)."""
    assert literal.startswith('"') and literal.endswith('"')
    body = literal[1:-1]
    out, i = [], 0
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    while i < len(body):
        ch = body[i]
        assert ch != '"', f"unescaped quote in {literal!r}"
        assert ch != "\n", f"raw newline in {literal!r}"
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(simple[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@given(st.text())
def test_quote_round_trips_any_text(value: str) -> None:
    assert unquote(promql.quote(value)) == value


@pytest.mark.parametrize(
    "value, expected",
    [
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("a\nb", r'"a\nb"'),
        ('x"} or up{a="', r'"x\"} or up{a=\""'),
        ("\x00", r'"\x00"'),
    ],
)
def test_quote_escapes(value: str, expected: str) -> None:
    assert promql.quote(value) == expected


def test_selector_escapes_values_and_validates_names() -> None:
    assert promql.selector("up", {"job": 'a"b'}, not_equal={"container": ""}) == 'up{job="a\\"b",container!=""}'
    with pytest.raises(InvalidInput):
        promql.selector("up", {'job"} or vector(1) #': "x"})
    with pytest.raises(InvalidInput):
        promql.selector("up or vector(1)", {})


@pytest.mark.parametrize(
    "name", ["", "UPPER", "a_b", "-a", "a-", "a" * 64, 'x"}', "a\n", "a b", "a/b", "..", ".a"]
)
def test_invalid_namespaces_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid namespace"):
        promql.restart_increase(name, "checkout")


@pytest.mark.parametrize("name", ["checkout", "checkout-v2", "a.b-c", "a" * 253])
def test_valid_object_names(name: str) -> None:
    assert promql.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Checkout", "a" * 254, "a..b", "checkout\n", 'checkout"', "a_b", ".*"])
def test_invalid_object_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        promql.ready_replicas("shop", name)


@pytest.mark.parametrize("window", ["5m", "30s", "100ms", "1h", "7d"])
def test_valid_durations(window: str) -> None:
    assert f"[{window}]" in promql.restart_increase("shop", "checkout", window)


@pytest.mark.parametrize("window", ["0m", "5", "5 m", "5m\n", "1h30m", "-5m", "5y", "5m]) or vector(1", ""])
def test_invalid_durations(window: str) -> None:
    with pytest.raises(InvalidInput, match="invalid duration"):
        promql.restart_increase("shop", "checkout", window)


def test_duration_seconds() -> None:
    assert promql.duration_seconds("90s") == 90
    assert promql.duration_seconds("2h") == 7200
    assert promql.duration_seconds("250ms") == 0.25


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan"), True])
def test_invalid_quantiles(q: float) -> None:
    with pytest.raises(InvalidInput):
        promql.latency_quantile("shop", "checkout", q)


def test_latency_query_shape_and_label_choice() -> None:
    assert promql.latency_quantile("shop", "checkout", 0.99, "10m", service_label="app") == (
        'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="shop",app="checkout"}[10m])))'
    )
    with pytest.raises(InvalidInput):
        promql.latency_quantile("shop", "checkout", service_label='app="x"')


def test_deployment_queries_join_through_ownership_not_name_regex() -> None:
    query = promql.restart_increase("shop", "checkout")
    assert 'kube_replicaset_owner{namespace="shop",owner_kind="Deployment",owner_name="checkout"}' in query
    # the only regexes are our fixed ones, never built from input
    assert re.findall(r'=~"([^"]*)"', query) == []
    assert "(.*)" in query  # label_replace copying owner_name, not a matcher


def test_error_ratio_uses_fixed_status_regex() -> None:
    query = promql.error_ratio("shop", "checkout")
    assert 'http_requests_total{namespace="shop",service="checkout",code=~"5.."}' in query
