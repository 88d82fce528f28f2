"""PromQL builders + PromClient against a real Prometheus with backfilled history (see history.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from k8s_runbooks.errors import InvalidInput, TransientError
from k8s_runbooks.prom import promql
from k8s_runbooks.prom.client import PromClient, no_data
from tests.helpers.http_receiver import free_port
from tests.prom.conftest import RunningPrometheus, start_prometheus, stop

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def client(prometheus: RunningPrometheus) -> Iterator[PromClient]:
    with PromClient(prometheus.url, timeout=10) as c:
        yield c


@pytest.fixture()
def at(prometheus: RunningPrometheus) -> datetime:
    return datetime.fromtimestamp(prometheus.end, tz=timezone.utc)


def value(result) -> float:  # noqa: ANN001
    assert len(result.samples) == 1, result.samples
    return result.samples[0][1]


def test_p95_latency_separates_slow_and_fast_service(client: PromClient, at: datetime) -> None:
    slow = value(client.instant(promql.latency_quantile("shop", "checkout", 0.95), at=at))
    fast = value(client.instant(promql.latency_quantile("shop", "payments", 0.95), at=at))
    assert slow > 0.3
    assert fast < 0.3


def test_error_ratio(client: PromClient, at: datetime) -> None:
    assert value(client.instant(promql.error_ratio("shop", "checkout"), at=at)) == pytest.approx(0.10)
    assert value(client.instant(promql.error_ratio("shop", "payments"), at=at)) == 0.0


def test_restart_rate_only_for_the_crashing_deployment(client: PromClient, at: datetime) -> None:
    crashing = client.instant(promql.restart_increase("shop", "checkout-v2", "10m"), at=at)
    assert [labels["pod"] for labels, _ in crashing.samples] == ["checkout-v2-5b6c7d8f9-zzzzz"]
    assert value(crashing) > 0
    # checkout's pods share the "checkout-" prefix with the canary, and staging/checkout crashes with the
    # same pod names: the ownership join and the namespace filter keep both out.
    healthy = client.instant(promql.restart_increase("shop", "checkout", "10m"), at=at)
    assert sorted(labels["pod"] for labels, _ in healthy.samples) == [
        "checkout-6d5f8c7b9-abcde", "checkout-6d5f8c7b9-fghij", "checkout-6d5f8c7b9-klmno"]
    assert all(v == 0 for _, v in healthy.samples)
    assert all(v == 0 for _, v in client.instant(promql.restart_increase("shop", "payments"), at=at).samples)


def test_ready_replicas_and_unknown_deployment_is_no_data(client: PromClient, at: datetime) -> None:
    assert value(client.instant(promql.ready_replicas("shop", "checkout"), at=at)) == 3
    assert value(client.instant(promql.ready_replicas("shop", "checkout-v2"), at=at)) == 0
    assert no_data(client.instant(promql.ready_replicas("shop", "does-not-exist"), at=at))


def test_crash_condition_is_zero_when_healthy_and_no_data_when_unknown(client: PromClient, at: datetime) -> None:
    crashing = client.check_threshold("PodCrashLooping", promql.crash_looping("shop", "checkout-v2"), 0, ">", at=at)
    assert crashing.breached and crashing.value == 1
    healthy = client.check_threshold("PodCrashLooping", promql.crash_looping("shop", "checkout"), 0, ">", at=at)
    assert not healthy.breached and healthy.value == 0 and not healthy.no_data
    unknown = client.check_threshold("PodCrashLooping", promql.crash_looping("shop", "nope"), 0, ">", at=at)
    assert unknown.no_data and unknown.value is None and not unknown.breached


def test_pod_level_queries(client: PromClient, at: datetime) -> None:
    assert value(client.instant(promql.crashloop_containers("shop", "checkout-v2"), at=at)) == 1
    assert no_data(client.instant(promql.crashloop_containers("shop", "checkout"), at=at))
    reasons = client.instant(promql.last_terminated_reason("shop", "checkout-v2"), at=at)
    assert [labels["reason"] for labels, _ in reasons.samples] == ["OOMKilled"]
    assert value(client.instant(promql.cpu_throttling_ratio("shop", "checkout-v2"), at=at)) == pytest.approx(0.5)
    assert all(v == 0 for _, v in client.instant(promql.cpu_throttling_ratio("shop", "checkout"), at=at).samples)
    assert value(client.instant(promql.memory_working_set_ratio("shop", "checkout-v2"), at=at)) == pytest.approx(200 / 256)
    assert value(client.instant(promql.cpu_usage("shop", "checkout-v2"), at=at)) == pytest.approx(0.5)


HOSTILE = [
    'payments"} or http_request_duration_seconds_bucket{service="checkout',
    'checkout",service!="',
    "checkout\\",
    "checkout\n",
    ".*",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_label_values_match_literally_and_find_nothing(client: PromClient, at: datetime, hostile: str) -> None:
    query = f"sum by (service) ({promql.selector('http_request_duration_seconds_bucket', {'namespace': 'shop', 'service': hostile})})"
    result = client.instant(query, at=at)
    assert result.samples == []  # never the other service's data


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_are_refused_by_builders(hostile: str) -> None:
    with pytest.raises(InvalidInput):
        promql.latency_quantile("shop", hostile)
    with pytest.raises(InvalidInput):
        promql.restart_increase(hostile, "checkout")


def test_range_query(client: PromClient, at: datetime) -> None:
    series = client.range(promql.ready_replicas("shop", "payments"), at - timedelta(minutes=10), at, "1m")
    assert len(series.series) == 1
    labels, points = series.series[0]
    assert labels["deployment"] == "payments"
    assert len(points) == 11 and all(v == 2 for _, v in points)


def test_bad_query_is_invalid_input_with_prometheus_message(client: PromClient) -> None:
    with pytest.raises(InvalidInput, match="parse error"):
        client.instant("sum(rate(http_requests_total[5m]")


def test_many_to_many_execution_error_is_invalid_input(client: PromClient, at: datetime) -> None:
    # Both sides have several series per (namespace): Prometheus answers 422 at execution time.
    with pytest.raises(InvalidInput, match="422"):
        client.instant("kube_pod_owner * on (namespace) kube_replicaset_owner", at=at)


def test_stopped_prometheus_is_transient_not_empty(prom_binaries, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "data").mkdir()
    proc, url = start_prometheus(prom_binaries["prometheus"], tmp_path / "data", tmp_path / "log")
    try:
        with PromClient(url, timeout=5) as c:
            assert c.instant("vector(1)").samples == [({}, 1.0)]
            stop(proc)
            with pytest.raises(TransientError, match="cannot connect"):
                c.instant("vector(1)")
            with pytest.raises(TransientError):
                c.check_threshold("up", "vector(1)", 0, ">")
    finally:
        stop(proc)


def test_silent_server_times_out_as_transient() -> None:
    # Accepts connections but never answers: the client's timeout must fire.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop_flag = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop_flag.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with PromClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5) as c:
            with pytest.raises(TransientError, match="did not answer"):
                c.instant("vector(1)")
    finally:
        stop_flag.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_nothing_listening_is_transient() -> None:
    with PromClient(f"http://127.0.0.1:{free_port()}", timeout=2) as c:
        with pytest.raises(TransientError):
            c.instant("vector(1)")
