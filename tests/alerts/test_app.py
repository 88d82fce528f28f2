"""The ASGI app: auth, size limit, content type, malformed and invalid bodies -> clear 4xx, nothing stored."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from k8s_runbooks.alerts.auth import sentry_signature
from k8s_runbooks.alerts.spool import Spool
from tests.alerts.conftest import SENTRY_SECRET, TOKEN, payload, payload_bytes

AM = "/v1/alerts/alertmanager"
BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _sentry_headers(body: bytes, secret: str = SENTRY_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "Sentry-Hook-Resource": "event_alert",
            "Sentry-Hook-Signature": sentry_signature(body, secret)}


def test_alertmanager_notification_is_spooled_routed_and_acknowledged(client: TestClient, spool: Spool) -> None:
    resp = client.post(AM, content=payload_bytes("alertmanager_firing"), headers=BEARER)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [a["outcome"] for a in body["alerts"]] == ["queued", "queued", "ignored"]
    assert body["alerts"][0]["route"] == "pod-crash" and "Watchdog" in body["alerts"][2]["reason"]
    rows = {r.alertname: r for r in spool.rows()}
    assert rows["PodCrashLooping"].state == "pending"
    assert rows["PodCrashLooping"].parameters["params"]["deployment"] == "checkout"
    assert rows["Watchdog"].state == "ignored" and "no route" in rows["Watchdog"].reason
    assert spool.outbox_count() == 3  # one Prefect event per alert


def test_repeat_is_deduplicated_and_resolved_is_recorded_without_a_run(client: TestClient, spool: Spool) -> None:
    client.post(AM, content=payload_bytes("alertmanager_firing"), headers=BEARER)
    again = client.post(AM, content=payload_bytes("alertmanager_firing"), headers=BEARER).json()
    assert [a["outcome"] for a in again["alerts"]] == ["duplicate"] * 3
    resolved = client.post(AM, content=payload_bytes("alertmanager_resolved"), headers=BEARER).json()
    assert resolved["alerts"][0]["outcome"] == "resolved"
    row = next(r for r in spool.rows() if r.alertname == "PodCrashLooping")
    assert row.repeats == 1 and row.resolved_at is not None and row.ends_at == "2026-11-25T10:21:33.500000Z"
    # the resolve added no row and closed the one still waiting for its run: nothing acts on a resolved alert
    assert len(spool.rows()) == 3 and spool.pending_count() == 1 and row.state == "resolved"
    metrics = client.get("/metrics").text
    assert 'k8s_runbooks_receiver_alerts_deduplicated_total{source="alertmanager"} 3.0' in metrics
    assert 'k8s_runbooks_receiver_alerts_received_total{source="alertmanager",status="resolved"} 1.0' in metrics
    assert "k8s_runbooks_receiver_spool_depth 1.0" in metrics


def test_resolved_without_firing_never_queues_a_run(client: TestClient, spool: Spool) -> None:
    resp = client.post(AM, content=payload_bytes("alertmanager_resolved"), headers=BEARER)
    assert resp.json()["alerts"][0]["outcome"] == "resolved"
    (row,) = spool.rows()
    assert row.state == "resolved" and row.deployment is None and spool.pending_count() == 0


def test_hostile_labels_are_recorded_as_rejected(client: TestClient, spool: Spool) -> None:
    data = payload("alertmanager_firing")
    data["alerts"][0]["labels"]["namespace"] = 'shop"} or vector(1) #'
    resp = client.post(AM, content=json.dumps(data), headers=BEARER)
    assert resp.status_code == 200 and resp.json()["alerts"][0]["outcome"] == "rejected"
    row = next(r for r in spool.rows() if r.alertname == "PodCrashLooping")
    assert row.state == "rejected" and "namespace" in row.reason and row.parameters is None


@pytest.mark.parametrize("headers, detail", [
    ({"Content-Type": "application/json"}, "missing bearer token"),
    ({"Content-Type": "application/json", "Authorization": "Bearer wrong"}, "invalid bearer token"),
    ({"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"}, "missing bearer token"),
])
def test_bad_or_missing_token_is_401_and_nothing_is_stored(client: TestClient, spool: Spool, headers: dict[str, str], detail: str) -> None:
    resp = client.post(AM, content=payload_bytes("alertmanager_firing"), headers=headers)
    assert resp.status_code == 401
    assert resp.json() == {"error": "unauthorized", "detail": detail.replace("missing bearer token", "missing bearer token: send 'Authorization: Bearer <token>'")}
    assert resp.headers["www-authenticate"] == "Bearer"
    assert spool.rows() == []


def test_grafana_accepts_bearer_or_basic(client: TestClient, spool: Spool) -> None:
    body = payload_bytes("grafana_firing")
    basic = base64.b64encode(b"grafana:grafana-pw").decode()
    wrong = base64.b64encode(b"grafana:nope").decode()
    ok = client.post("/v1/alerts/grafana", content=body, headers={"Content-Type": "application/json", "Authorization": f"Basic {basic}"})
    assert ok.status_code == 200 and ok.json()["alerts"][0]["route"] == "high-latency"
    assert client.post("/v1/alerts/grafana", content=body, headers=BEARER).json()["alerts"][0]["outcome"] == "duplicate"
    bad = client.post("/v1/alerts/grafana", content=body, headers={"Content-Type": "application/json", "Authorization": f"Basic {wrong}"})
    assert bad.status_code == 401 and bad.json()["detail"] == "invalid basic credentials"
    assert len(spool.rows()) == 1


def test_sentry_signature_checked_over_the_raw_body(client: TestClient, spool: Spool) -> None:
    body = payload_bytes("sentry_event_alert")
    bad = client.post("/v1/alerts/sentry", content=body, headers=_sentry_headers(body, "other-secret"))
    assert bad.status_code == 401 and "Sentry-Hook-Signature" in bad.json()["detail"]
    missing = client.post("/v1/alerts/sentry", content=body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and spool.rows() == []
    # The signature covers the exact bytes: re-serialising the JSON would not verify.
    tampered = body.replace(b'"checkout"', b'"payments"')
    assert client.post("/v1/alerts/sentry", content=tampered, headers=_sentry_headers(body)).status_code == 401
    ok = client.post("/v1/alerts/sentry", content=body, headers=_sentry_headers(body))
    assert ok.status_code == 200 and ok.json()["alerts"][0]["route"] == "sentry-crash"
    (row,) = spool.rows()
    assert row.deployment == "pod-crash/pod-crash" and row.parameters["params"]["deployment"] == "checkout"


def test_sentry_other_resources_are_acknowledged_but_not_stored(client: TestClient, spool: Spool) -> None:
    body = b'{"action": "created", "data": {"installation": {}}}'
    headers = {**_sentry_headers(body), "Sentry-Hook-Resource": "installation"}
    resp = client.post("/v1/alerts/sentry", content=body, headers=headers)
    assert resp.status_code == 202 and "installation" in resp.json()["detail"]
    assert spool.rows() == []


def test_oversize_body_is_413(client: TestClient, spool: Spool) -> None:
    data = payload("alertmanager_firing")
    data["alerts"][0]["annotations"]["description"] = "x" * 70_000
    resp = client.post(AM, content=json.dumps(data), headers=BEARER)
    assert resp.status_code == 413 and resp.json()["error"] == "payload too large"
    assert spool.rows() == []


def test_oversize_chunked_body_without_length_is_413(client: TestClient, spool: Spool) -> None:
    def chunks():  # noqa: ANN202
        for _ in range(80):
            yield b"x" * 1024
    resp = client.post(AM, content=chunks(), headers=BEARER)
    assert resp.status_code == 413 and spool.rows() == []


def test_malformed_json_is_400(client: TestClient, spool: Spool) -> None:
    resp = client.post(AM, content=b'{"version": "4", "alerts": [', headers=BEARER)
    assert resp.status_code == 400 and resp.json()["error"] == "malformed JSON"
    assert spool.rows() == []


@pytest.mark.parametrize("source", ["alertmanager_firing", "grafana_firing"])
def test_a_timestamp_with_no_utc_equivalent_is_422_not_500(client: TestClient, spool: Spool, source: str) -> None:
    """Schemathesis found it (Grafana, CI): 0001-01-01 at +05:00 is before year 1 in UTC, and converting it later
    raised OverflowError, a 500."""
    data = payload(source)
    data["alerts"][0]["startsAt"] = "0001-01-01T00:00:00+05:00"
    resp = client.post(f"/v1/alerts/{source.split('_')[0]}", content=json.dumps(data), headers=BEARER)
    assert resp.status_code == 422, resp.text
    assert "alerts.0.startsAt" in {d["field"] for d in resp.json()["detail"]}
    assert spool.rows() == []


def test_schema_violation_is_422_with_the_field_named(client: TestClient, spool: Spool) -> None:
    data = payload("alertmanager_firing")
    data["alerts"][1]["startsAt"] = "yesterday"
    data["alerts"][0]["status"] = "exploded"
    resp = client.post(AM, content=json.dumps(data), headers=BEARER)
    assert resp.status_code == 422
    body = resp.json()
    fields = {d["field"] for d in body["detail"]}
    assert {"alerts.0.status", "alerts.1.startsAt"} <= fields
    assert body["error"].startswith("invalid AlertmanagerPayload payload: alerts.0.status")
    assert spool.rows() == []  # one bad alert rejects the whole notification (the sender keeps it)


def test_wrong_content_type_is_415(client: TestClient, spool: Spool) -> None:
    resp = client.post(AM, content=payload_bytes("alertmanager_firing"),
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    assert resp.status_code == 415 and "application/json" in resp.json()["detail"]
    assert spool.rows() == []


def test_unknown_path_and_method_are_json_errors(client: TestClient) -> None:
    assert client.get("/v1/alerts/nope").json()["error"] == "not found"
    wrong = client.get(AM)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method not allowed"


def test_healthz_metrics_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["auth"] == {"alertmanager": "bearer", "grafana": "bearer+basic", "sentry": "hmac-sha256"}
    assert "k8s_runbooks_receiver_dispatch_latency_seconds_bucket" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/v1/alerts/alertmanager", "/v1/alerts/grafana", "/v1/alerts/sentry", "/healthz", "/metrics"}
    ref = schema["paths"]["/v1/alerts/alertmanager"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert "groupKey" in schema["components"]["schemas"][name]["properties"]
    assert "AlertmanagerAlert" in schema["components"]["schemas"]
