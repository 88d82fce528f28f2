"""Injection into queries: alert label values and runbook parameters reach PromQL, label selectors and
field selectors. Proven with hypothesis over hostile strings:

- PromQL: a builder either refuses the input (InvalidInput) or produces a query whose structure is the
  same as with benign names and whose string literals decode back to exactly the inputs;
- names: whatever the receiver's label rules, the runbook parameter models and the PromQL validators accept
  is a Kubernetes DNS-1123 label/subdomain (an independent regex), so it carries no selector syntax;
- field selectors: the selector the events reader builds, parsed by the sandbox API server's parser,
  selects exactly the events of that object.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from flows.params import HighLatencyParams, PodCrashParams
from k8s_runbooks.alerts.routing import Router, RoutesFile
from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.prom import promql
from k8s_runbooks.sandbox.selectors import parse_field_selector
from tests.reliability.conftest import TALLY, fuzz_settings
from tests.reliability.promql_parse import split
from tests.reliability.strategies import HOSTILE

# apimachinery's validation, ASCII only, anchored on the whole string (no `$`-before-newline slack).
K8S_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z", re.ASCII)
K8S_SUBDOMAIN = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z", re.ASCII)
SELECTOR_SYNTAX = set(",=!()<> \t\n\r\"'\\{}[]~|&;#")

ANY_TEXT = st.one_of(HOSTILE, st.text(max_size=30), st.text(alphabet="abc-.0\n\"\\{},=!~ ", max_size=12),
                     st.sampled_from(["shop", "checkout", "a.b", "a" * 63, "a" * 64, "5m", "٥m", "1h", "0s", "10ms", "99999999999999999999d"]))
WINDOW = st.one_of(st.sampled_from(["5m", "30s", "1h", "2d", "250ms", "0m", "5 m", "5m\n", "٥m", "-5m", "5y", "5m]", "5m] or vector(1) #"]),
                   st.from_regex(r"\A[0-9]{1,4}(ms|s|m|h|d)\Z"), st.text(max_size=6))

BENIGN = {"namespace": "ns-benign", "deployment": "dep-benign", "service": "svc-benign", "window": "7m"}
BUILDERS: dict[str, Callable[..., str]] = {
    "restart_increase": lambda ns, name, w: promql.restart_increase(ns, name, w),
    "crash_looping": lambda ns, name, w: promql.crash_looping(ns, name, w),
    "crashloop_containers": lambda ns, name, w: promql.crashloop_containers(ns, name),
    "last_terminated_reason": lambda ns, name, w: promql.last_terminated_reason(ns, name),
    "ready_replicas": lambda ns, name, w: promql.ready_replicas(ns, name),
    "latency_quantile_by_pod": lambda ns, name, w: promql.latency_quantile_by_pod(ns, name, 0.95, w),
    "error_ratio": lambda ns, name, w: promql.error_ratio(ns, name, w),
    "cpu_throttling_ratio": lambda ns, name, w: promql.cpu_throttling_ratio(ns, name, w),
    "memory_working_set_ratio": lambda ns, name, w: promql.memory_working_set_ratio(ns, name),
}


def _swap(literals: list[str], values: dict[str, str]) -> list[str]:
    return [values.get(lit, lit) for lit in literals]


@fuzz_settings(0.02)
@given(value=ANY_TEXT, label=st.sampled_from(["namespace", "pod", "service", "le"]))
@example(value='x"} or vector(1) #', label="namespace")
@example(value="a\\", label="namespace")
@example(value="\x00\x7f\u2028", label="pod")
def test_selector_literals_decode_to_exactly_the_input(value: str, label: str) -> None:
    skeleton, literals = split(promql.selector("kube_pod_owner", {label: value, "owner_kind": "ReplicaSet"}, not_equal={"container": value}))
    assert skeleton == f'kube_pod_owner{{{label}="§",owner_kind="§",container!="§"}}'
    assert literals == [value, "ReplicaSet", value]
    TALLY["injection promql selector"] += 1


@fuzz_settings(0.03)
@given(builder=st.sampled_from(sorted(BUILDERS)), ns=ANY_TEXT, name=ANY_TEXT, window=WINDOW)
@example(builder="crash_looping", ns='shop"} or vector(1) #', name="checkout", window="5m")
@example(builder="restart_increase", ns="shop", name="checkout", window="٥m")
@example(builder="restart_increase", ns="shop", name="checkout", window="5m] or vector(1) #")
def test_builders_refuse_or_keep_the_query_structure(builder: str, ns: str, name: str, window: str) -> None:
    build = BUILDERS[builder]
    try:
        query = build(ns, name, window)
    except InvalidInput as exc:
        assert str(exc).startswith("invalid "), exc
        TALLY["injection promql refused"] += 1
        return
    # Accepted: only names and durations Prometheus itself reads as such.
    assert K8S_LABEL.match(ns) and K8S_SUBDOMAIN.match(name), (ns, name)
    benign = build(BENIGN["namespace"], BENIGN["deployment"], BENIGN["window"])
    skel, lits = split(query)
    benign_skel, benign_lits = split(benign)
    uses_window = "[7m]" in benign
    if uses_window:
        assert re.fullmatch(r"[0-9]+(ms|s|m|h|d)", window, re.ASCII), f"window {window!r} accepted into {query}"
        skel = skel.replace(f"[{window}]", "[7m]")
    assert skel == benign_skel, f"structure changed:\n{query}\n{benign}"
    assert lits == _swap(benign_lits, {BENIGN["namespace"]: ns, BENIGN["deployment"]: name}), (lits, benign_lits)
    TALLY["injection promql accepted"] += 1


ROUTER = Router(RoutesFile(label_rules={"namespace": "dns_label", "deployment": "dns_subdomain", "service": "dns_subdomain"}))


def _accepts(fn: Callable[[], Any]) -> bool:
    try:
        fn()
        return True
    except (InvalidInput, ValidationError):
        return False


@fuzz_settings(0.03)
@given(value=ANY_TEXT)
@example(value="shop\n")
@example(value="ｓｈｏｐ")
@example(value="a" * 64)
def test_every_gate_accepts_only_kubernetes_names(value: str) -> None:
    """Receiver label rules, runbook parameter models and PromQL validators: what passes is a DNS name."""
    label_gates = {
        "route label namespace": lambda: ROUTER.validate_label("namespace", value),
        "PodCrashParams.namespace": lambda: PodCrashParams(namespace=value, deployment="checkout"),
        "HighLatencyParams.namespace": lambda: HighLatencyParams(namespace=value, service="checkout"),
        "promql.validate_namespace": lambda: promql.validate_namespace(value),
    }
    name_gates = {
        "route label deployment": lambda: ROUTER.validate_label("deployment", value),
        "PodCrashParams.deployment": lambda: PodCrashParams(namespace="shop", deployment=value),
        "HighLatencyParams.service": lambda: HighLatencyParams(namespace="shop", service=value),
        "promql.validate_name": lambda: promql.validate_name(value),
    }
    for gate, fn in label_gates.items():
        if _accepts(fn):
            assert K8S_LABEL.match(value) and len(value) <= 63, f"{gate} accepted {value!r}"
    for gate, fn in name_gates.items():
        if _accepts(fn):
            assert K8S_SUBDOMAIN.match(value) and len(value) <= 253, f"{gate} accepted {value!r}"
            assert not SELECTOR_SYNTAX & set(value)
    TALLY["injection name gates"] += 1


@fuzz_settings(0.02)
@given(name=ANY_TEXT, kind=st.sampled_from(["Pod", "ReplicaSet", "Deployment"]),
       others=st.lists(ANY_TEXT, max_size=4))
def test_event_field_selector_selects_exactly_the_object(name: str, kind: str, others: list[str]) -> None:
    """The selector `kube.events.events_for` builds, read by the API server's grammar (the sandbox's)."""
    assume(_accepts(lambda: promql.validate_name(name)))  # every caller passes validated names (see the test above)
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"  # exactly as kube/events.py builds it
    matches = parse_field_selector(selector, "events")
    candidates = [(n, k) for n in [name, *others, name + "x", name + ",a"] for k in ("Pod", "ReplicaSet", "Deployment")]
    for n, k in candidates:
        obj = {"involvedObject": {"name": n, "kind": k}, "metadata": {"name": "e", "namespace": "shop"}}
        assert matches(obj) == (n == name and k == kind), (selector, n, k)
    TALLY["injection field selector"] += 1


def test_the_events_reader_builds_the_selector_checked_above() -> None:
    """Guards the copy in the property test: if kube/events.py changes its selector, this fails."""
    import inspect

    from k8s_runbooks.kube import events

    assert 'f"involvedObject.name={name},involvedObject.kind={kind}"' in inspect.getsource(events.events_for)


@pytest.mark.parametrize("window", ["٥m", "１m", "5m\n"])
def test_non_ascii_digit_windows_are_refused(window: str) -> None:
    """`\\d` matches any Unicode digit: such a window passed validation and broke the query at Prometheus."""
    with pytest.raises(InvalidInput):
        promql.validate_duration(window)
