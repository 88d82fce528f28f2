"""Real sentry-sdk → local envelope receiver: what leaves the process on a runbook failure."""

from __future__ import annotations

import json

from k8s_runbooks.sentry import reporting
from tests.helpers.envelope_receiver import EnvelopeReceiver

SECRET = "hunter2-very-secret-value"


def _fail() -> None:
    db_password = SECRET  # a local variable holding a secret must not be attached to the event
    raise ConnectionError(f"cannot reach postgres://app:{db_password}@db:5432/shop (password={db_password})")


def test_failure_is_captured_with_run_context_and_no_secret(receiver: EnvelopeReceiver) -> None:
    assert reporting.init_reporting(receiver.dsn)
    assert reporting.init_reporting(receiver.dsn)  # idempotent
    try:
        _fail()
    except ConnectionError as exc:
        event_id = reporting.report_failure(
            exc,
            {"flow_run_id": "8c1d", "flow_name": "pod-crash", "runbook": "pod-crash", "namespace": "shop",
             "deployment": "checkout", "note": f"token={SECRET}"},
        )
    assert event_id
    (event,) = receiver.wait_for_events(1)
    assert event["event_id"] == event_id
    assert event["tags"] == {"flow_run_id": "8c1d", "flow_name": "pod-crash", "runbook": "pod-crash",
                             "namespace": "shop", "deployment": "checkout"}
    assert event["contexts"]["runbook"]["deployment"] == "checkout"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ConnectionError"
    assert "cannot reach" in exception["value"] and "REDACTED" in exception["value"]
    assert SECRET not in json.dumps(receiver.events)
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert receiver.errors == []


def test_not_initialised_reports_nothing() -> None:
    assert reporting.init_reporting(None) is False
    assert reporting.init_reporting("") is False
