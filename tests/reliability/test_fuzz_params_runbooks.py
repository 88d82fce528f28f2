"""Fuzzing what people type: runbook parameters as the Prefect UI / API submit them (JSON objects, any
types), and Markdown runbooks with broken bindings.

Parameters: invalid input fails with a pydantic ValidationError naming the field and the problem; valid
input builds its runbook's queries without a single refusal (the parameter model is at least as strict as
the query builders, so nothing half-validated reaches Prometheus or the Kubernetes API).
Runbooks: any mutation of a good runbook parses or fails with InvalidInput carrying the file name; never
another exception.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from flows.params import HighLatencyParams, IncidentParams, PodCrashParams
from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.prom import promql
from k8s_runbooks.runbook_docs import parse_runbook, runbooks_dir
from tests.reliability.conftest import TALLY, fuzz_settings
from tests.reliability.promql_parse import split
from tests.reliability.strategies import HOSTILE, JUNK

NAME = st.one_of(st.sampled_from(["shop", "checkout", "payments", "drill-a", "a.b", "x" * 63]), HOSTILE, st.text(max_size=12))
WINDOW = st.one_of(st.sampled_from(["5m", "30s", "1h", "0m", "5 m", "5m\n", "٥m", "5d", "90s", "1000000000h"]), st.text(max_size=5))
NUMBER = st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["5", "1e3", "", "NaN", True, None]))
APPROVAL = st.one_of(st.sampled_from(["required", "auto", "dry-run"]), st.text(max_size=8))


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, value, value, JUNK)


def _params(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects as a form or API client sends them: some fields left out, some of the wrong type,
    now and then an unknown field."""
    return st.fixed_dictionaries({}, optional={k: _maybe(v) for k, v in fields.items()} | {"unknown_field": JUNK})


POD_CRASH = _params({"namespace": NAME, "deployment": NAME, "approval": APPROVAL, "approval_timeout_seconds": NUMBER,
                     "log_tail_lines": NUMBER, "stable_seconds": NUMBER, "verify_window_seconds": NUMBER,
                     "incident_window_minutes": NUMBER, "notes": st.text(max_size=40), "drill": st.booleans()})
HIGH_LATENCY = _params({"namespace": NAME, "service": NAME, "deployment": NAME, "service_label": NAME, "approval": APPROVAL,
                        "p95_threshold_ms": NUMBER, "rate_window": WINDOW, "throttling_threshold": NUMBER,
                        "outlier_factor": NUMBER, "cpu_limit_factor": NUMBER, "monitor_timeout_seconds": NUMBER})
INCIDENT = _params({"namespace": NAME, "service": NAME, "deployment": NAME, "kind": st.sampled_from(["auto", "pod-crash", "x"]),
                    "alert_labels": st.dictionaries(st.text(max_size=5), st.one_of(NAME, JUNK), max_size=3),
                    "rate_window": WINDOW, "crash_window": WINDOW, "p95_threshold_ms": NUMBER, "service_label": NAME})


def _validate(model: type[BaseModel], data: dict[str, Any]) -> BaseModel | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        assert errors and all(e["loc"] and e["msg"] for e in errors), errors
        # The message names each bad field, so the form / API user knows what to fix.
        text = str(exc)
        assert all(str(e["loc"][0]) in text for e in errors), text
        TALLY[f"params rejected {model.__name__}"] += 1
        return None


def _queries_build(*queries: str) -> None:
    for query in queries:
        split(query)  # parses: literals terminate, escapes are valid


@fuzz_settings(0.02)
@given(data=POD_CRASH)
@example(data={"namespace": "shop\n", "deployment": "checkout"})
@example(data={"namespace": "shop", "deployment": "checkout", "verify_window_seconds": float("nan")})
def test_pod_crash_params(data: dict[str, Any]) -> None:
    params = _validate(PodCrashParams, data)
    if params is not None:
        assert isinstance(params, PodCrashParams)
        window = f"{params.verify_window_seconds}s"
        _queries_build(promql.crash_looping(params.namespace, params.deployment, window),
                       promql.restart_increase(params.namespace, params.deployment, window),
                       promql.ready_replicas(params.namespace, params.deployment))
        TALLY["params accepted PodCrashParams"] += 1


@fuzz_settings(0.02)
@given(data=HIGH_LATENCY)
@example(data={"namespace": "shop", "service": "checkout", "rate_window": "٥m"})
@example(data={"namespace": "shop", "service": "checkout", "p95_threshold_ms": float("inf")})
def test_high_latency_params(data: dict[str, Any]) -> None:
    params = _validate(HighLatencyParams, data)
    if params is not None:
        assert isinstance(params, HighLatencyParams)
        assert all(math.isfinite(v) for v in (params.p95_threshold_ms, params.throttling_threshold, params.outlier_factor))
        _queries_build(promql.latency_quantile_by_pod(params.namespace, params.service, 0.95, params.rate_window,
                                                      service_label=params.service_label),
                       promql.error_ratio(params.namespace, params.service, params.rate_window, service_label=params.service_label),
                       promql.cpu_throttling_ratio(params.namespace, params.deployment, params.rate_window))
        TALLY["params accepted HighLatencyParams"] += 1


@fuzz_settings(0.02)
@given(data=INCIDENT)
def test_incident_params(data: dict[str, Any]) -> None:
    params = _validate(IncidentParams, data)
    if params is not None:
        assert isinstance(params, IncidentParams)
        _queries_build(promql.crash_looping(params.namespace, params.deployment, params.crash_window),
                       promql.latency_quantile(params.namespace, params.service, 0.95, params.rate_window,
                                               service_label=params.service_label))
        TALLY["params accepted IncidentParams"] += 1


# ------------------------------------------------------------------------------------ Markdown runbooks
GOOD = (runbooks_dir() / "pod-crash.md").read_text(encoding="utf-8")
BREAKAGES = st.sampled_from([
    ("step=identify", "step=contain"),            # duplicate step
    ("step=identify", "step=Identify_1"),         # bad step id
    ("step=identify", "step="),                   # empty step id
    ("step=identify", "stp=identify"),            # unknown key
    ("step=identify", "step=identify step=x"),    # key given twice
    ("tasks=", "tasks"),                          # malformed item
    ("<!-- automation:", "<!-- automaton:"),      # binding no longer recognised (missing binding)
    ("<!-- automation:", "<!-- automation"),      # malformed comment
    ("-->", "->"),                                # unterminated comment
    ("### 1.", "### 7."),                         # numbering gap
    ("### 2.", "#### 2."),                        # heading level changed: section swallowed
    ("# Pod", "Pod"),                             # title gone
    ("flow=pod-crash", "flow=pod-crash step=identify"),  # step binding before the first step
    ("\n", "\r\n"),                               # Windows line endings
    ("```", "~~~"),                               # fences changed
])


@fuzz_settings(0.02)
@given(edits=st.lists(st.tuples(BREAKAGES, st.integers(0, 3)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, len(GOOD))),
       junk=st.one_of(st.just(""), st.text(max_size=40), st.sampled_from(["<!-- automation: step=x tasks=a,,b -->", "\x00", "<!--", "###"])))
@example(edits=[(("step=identify", "step=contain"), 0)], cut=None, junk="")
@example(edits=[(("-->", "->"), 0)], cut=None, junk="")
def test_broken_runbooks_fail_clearly(edits: list[tuple[tuple[str, str], int]], cut: int | None, junk: str) -> None:
    text = GOOD
    for (old, new), nth in edits:
        parts = text.split(old)
        if len(parts) > 1:
            k = min(nth, len(parts) - 2)
            text = old.join(parts[: k + 1]) + new + old.join(parts[k + 1 :])
    if cut is not None:
        text = text[:cut] + junk + text[cut:]
    try:
        book = parse_runbook(text, "fuzzed.md")
    except InvalidInput as exc:
        assert "fuzzed.md" in str(exc), exc
        TALLY["runbooks rejected"] += 1
        return
    ids = book.step_ids
    assert book.title and ids and len(ids) == len(set(ids)), ids
    assert [s.number for s in book.steps] == list(range(1, len(ids) + 1))
    TALLY["runbooks accepted"] += 1


@fuzz_settings(0.01)
@given(renames=st.dictionaries(st.sampled_from(["identify", "contain", "recover", "verify", "communicate"]),
                               st.sampled_from(["identify", "contain", "recover", "verify", "communicate", "frobnicate", "triage"]), max_size=3))
@example(renames={"contain": "frobnicate"})
@example(renames={"contain": "recover", "recover": "contain"})
def test_bindings_to_unknown_or_reordered_steps_fail_clearly(renames: dict[str, str]) -> None:
    from flows.steps import declared_steps
    from k8s_runbooks.runbook_docs import check_binding

    text = GOOD
    for old, new in renames.items():
        text = text.replace(f"step={old} ", f"step=@@{new} ")
    text = text.replace("step=@@", "step=")
    try:
        book = parse_runbook(text, "fuzzed.md")
        check_binding(book, declared_steps("pod-crash"), None)
    except InvalidInput as exc:
        assert "fuzzed.md" in str(exc) and ("step" in str(exc)), exc
        TALLY["runbooks bad binding rejected"] += 1
        return
    assert book.step_ids == declared_steps("pod-crash")
    TALLY["runbooks binding accepted"] += 1
