"""Against the sandbox's real Prometheus: a hostile label value quoted by `promql.quote` matches nothing
(no series, no parse error), while the same value pasted into the query by plain string formatting does
change what the query returns. The second half shows the first half can fail."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from k8s_runbooks.prom import promql
from tests.conftest import Sandbox
from tests.flows.test_pod_crash_flow import wait_for
from tests.reliability.strategies import HOSTILE_VALUES

pytestmark = [pytest.mark.slow, pytest.mark.integration]

INJECTIONS = [
    'shop"} or vector(1) #',
    'shop",namespace=~".+',
    'x"} or kube_pod_owner{namespace=~".+',
    'shop"}) or (kube_pod_owner{namespace!="',
    "shop\\",
    "shop\n",
    'shop"} or up{job=~".+',
    *[v for v in HOSTILE_VALUES if v not in ("", "\ud800")],  # a lone surrogate cannot even be sent as UTF-8
]


def _query(prom: str, expr: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    return r.status_code, r.json()


@pytest.fixture(scope="module")
def prom(sandbox: Sandbox) -> str:
    # kube-state-metrics series of the demo shop exist once Prometheus has scraped the sandbox.
    wait_for(lambda: _query(sandbox.prometheus_url, 'count(kube_pod_owner{namespace="shop"})')[1]["data"]["result"], 180,
             "kube_pod_owner series of namespace shop")
    return sandbox.prometheus_url


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
def test_quoted_hostile_value_matches_nothing(prom: str, value: str) -> None:
    status, body = _query(prom, f"count({promql.selector('kube_pod_owner', {'namespace': value})}) or vector(0)")
    assert status == 200 and body["status"] == "success", body
    (sample,) = body["data"]["result"]
    assert sample["value"][1] == "0", f"{value!r} matched series: {body}"


def test_unquoted_formatting_would_have_matched_extra_series(prom: str) -> None:
    """The control: naive formatting of two of the same values changes the result (so the test above could fail)."""
    _, honest = _query(prom, 'count(kube_pod_owner{namespace="shop"})')
    expected = int(honest["data"]["result"][0]["value"][1])
    _, injected = _query(prom, 'count(kube_pod_owner{namespace="%s"})' % 'shop"} or up{job=~".+')
    assert injected["status"] == "success"
    assert int(injected["data"]["result"][0]["value"][1]) > expected
    _, vector = _query(prom, 'count(kube_pod_owner{namespace="%s"})' % 'x"}) or vector(1) or count(up{job="')
    assert vector["status"] == "success" and vector["data"]["result"][0]["value"][1] == "1", vector
