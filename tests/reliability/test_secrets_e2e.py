"""Secrets in a real run: the whole corpus is planted where an incident tool reads (a crashing pod's log and
its Deployment's env, Kubernetes events on the pods and the Deployment, Sentry issues from an HTTP-level
Web API double, alert labels and annotations sent to the sandbox's alert receiver); the pod-crash runbook
runs against the session sandbox; then nothing of it may be found in any Prefect artifact (read through the
API), the post-mortem (Markdown and HTML), the notifications (a webhook receiver) or the receiver's log.

Each plant is first checked to be really there, so a clean result cannot come from a secret that never
reached the system.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from k8s_runbooks.sandbox import supervisor
from k8s_runbooks.sandbox.demo_workload import set_fault
from tests.conftest import Sandbox
from tests.flows.test_pod_crash_flow import NS, Env, wait_for
from tests.helpers.envelope_receiver import FakeSentryApi, sentry_issue
from tests.helpers.http_receiver import WebhookReceiver
from tests.reliability.secrets_corpus import CORPUS, SECRETS

# Setting up (crash loop, 53 events, 53 alerts) and one runbook run take minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]

SENTRY_TOKEN = "sntrys_FakeSentryApiTokenCanary9001_abcdefghijklmnopqrstuvwxyz"
ALL_SECRETS = [*SECRETS, SENTRY_TOKEN]
# Everything the crashing container prints before it exits: every corpus line, then the usual panic.
CRASH_LOG = "\n".join(line for _, line, _ in CORPUS) + "\npanic: checkout cannot reach the ledger"


def leaks(text: str) -> list[str]:
    return [s for s in ALL_SECRETS if s in text]


def _issues() -> list[dict[str, Any]]:
    """Sentry issues whose title, culprit, metadata and permalink carry corpus lines."""
    out = []
    for n, (name, line, _) in enumerate(CORPUS, start=1):
        out.append(sentry_issue(n, title=f"Error: {line}", culprit=f"checkout.handler {name}",
                                metadata={"value": line}, lastSeen=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                                firstSeen=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 60)),
                                permalink=f"https://sentry.example/organizations/acme/issues/{1000 + n}/?access_token=PermalinkCanary{n:04d}xyz"))
    return out


PERMALINK_SECRETS = [f"PermalinkCanary{n:04d}xyz" for n in range(1, len(CORPUS) + 1)]
ALL_SECRETS += PERMALINK_SECRETS


class LeakRun:
    def __init__(self, box: Sandbox, tmp: Path) -> None:
        self.box = box
        self.sentry = FakeSentryApi(SENTRY_TOKEN, {("acme", "checkout"): _issues()}, page_size=25).start()
        self.hook = WebhookReceiver().start()
        self.flow = Env(box, tmp)
        self.flow.env.update({
            "K8S_RUNBOOKS_SENTRY_API_URL": self.sentry.api_url, "K8S_RUNBOOKS_SENTRY_TOKEN": SENTRY_TOKEN,
            "K8S_RUNBOOKS_SENTRY_ORG": "acme", "K8S_RUNBOOKS_SENTRY_PROJECT": "checkout",
            "K8S_RUNBOOKS_NOTIFY_WEBHOOK_URL": self.hook.url,
        })
        self.events: list[str] = []
        self.result: dict[str, Any] = {}
        self.alert_responses: list[httpx.Response] = []
        self.crashing: list[str] = []
        self.planted_log = ""

    def close(self) -> None:
        for name in self.events:
            try:
                self.flow.core.delete_namespaced_event(name, NS)
            except k8s.ApiException:
                pass
        set_fault(self.box.kubeconfig, NS, "checkout", "clear")
        self.sentry.stop()
        self.hook.stop()

    # ------------------------------------------------------------------ plants
    def plant_alerts(self) -> list[httpx.Response]:
        """Alert labels/annotations with secrets to the sandbox receiver: one unrouted, one rejected (its
        deployment label is not a name), one with a secret-bearing groupKey and truncation (logged)."""
        cfg = supervisor.resolve_config(supervisor.SandboxSettings(), self.box.state_dir)
        token = supervisor.receiver_token(cfg)
        url = f"http://127.0.0.1:{cfg.ports.receiver}/v1/alerts/alertmanager"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sent = []
        for i, (name, line, _) in enumerate(CORPUS):
            labels = {"alertname": "PodCrashLooping" if i % 2 else "SecretProbe", "namespace": "drill-secrets",
                      "deployment": line[:4000], "leak": line[:4000]}
            body = {"version": "4", "groupKey": f"{{}}:{{leak={line!r}}}", "truncatedAlerts": 1, "status": "firing",
                    "receiver": "runbooks", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {"description": line},
                    "externalURL": "http://alertmanager",
                    "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": line, "runbook": name},
                                "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": f"http://prom/graph?{line}",
                                "fingerprint": f"secret{i:04d}"}]}
            sent.append(httpx.post(url, json=body, headers=headers, timeout=10))
        return sent

    def plant_events(self, pods: list[str]) -> None:
        targets = [("Pod", p) for p in pods] + [("Deployment", "checkout")]
        for i, (name, line, _) in enumerate(CORPUS):
            kind, obj = targets[i % len(targets)]
            event = k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(name=f"secret-probe-{i:03d}", namespace=NS),
                involved_object=k8s.V1ObjectReference(kind=kind, name=obj, namespace=NS),
                reason="SecretProbe", message=f"{name}: {line}", type="Warning", count=1,
                first_timestamp=k8s_now(), last_timestamp=k8s_now(), source=k8s.V1EventSource(component="secret-probe"),
            )
            self.flow.core.create_namespaced_event(NS, event)
            self.events.append(f"secret-probe-{i:03d}")


def k8s_now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def leak_run(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakRun]:
    if not sandbox.is_sandbox:
        pytest.skip("plants secrets and crashes the demo shop: sandbox only")
    run = LeakRun(sandbox, tmp_path_factory.mktemp("secrets-e2e"))
    try:
        run.alert_responses = run.plant_alerts()
        set_fault(sandbox.kubeconfig, NS, "checkout", "crash", "1", message=CRASH_LOG)
        crashing = wait_for(lambda: len(run.flow.crash_looping()) >= 2 and run.flow.crash_looping(), 180,
                            "checkout pods in CrashLoopBackOff")
        run.crashing = crashing
        run.planted_log = run.flow.core.read_namespaced_pod_log(crashing[0], NS, previous=True)
        run.plant_events(crashing)
        run.result = run.flow.run(approval="auto", drill=True)
        yield run
    finally:
        run.close()


def _all_artifacts(api: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = api.post("/artifacts/filter", json={"offset": len(out), "limit": 200})
        r.raise_for_status()
        page = r.json()
        out += page
        if len(page) < 200:
            return out


def test_the_secrets_really_reached_the_system(leak_run: LeakRun) -> None:
    """Not vacuous: the log, the events, Sentry and the receiver all got the corpus, and the run used them."""
    assert leak_run.result["state"] == "COMPLETED", leak_run.result
    assert len(leaks(leak_run.planted_log)) >= len(CORPUS) - 1, "the crashing container printed the corpus"
    events = leak_run.flow.core.list_namespaced_event(NS).items
    assert sum(1 for e in events if e.reason == "SecretProbe" and leaks(e.message or "")) == len(CORPUS)
    assert all(r.status_code == 200 for r in leak_run.alert_responses), [r.text for r in leak_run.alert_responses][:3]
    assert any(r.path.startswith("/api/0/projects/acme/checkout/issues/") for r in leak_run.sentry.requests)
    assert leak_run.hook.received, "the run sent notifications"
    record = leak_run.flow.record(leak_run.result["flow_run_id"])
    kinds = {e["kind"] for e in record["evidence"]}
    assert {"log", "events", "sentry"} <= kinds, kinds
    assert "[REDACTED:" in json.dumps(record["evidence"]), "redaction markers in the evidence"


def test_no_secret_in_any_prefect_artifact(leak_run: LeakRun) -> None:
    artifacts = _all_artifacts(leak_run.flow.api)
    assert any(a.get("flow_run_id") == leak_run.result["flow_run_id"] for a in artifacts)
    leaked = {a["key"] or a["id"]: leaks(json.dumps(a)) for a in artifacts}
    assert not {k: v for k, v in leaked.items() if v}, f"{len(artifacts)} artifacts checked"


def test_no_secret_in_the_postmortem(leak_run: LeakRun) -> None:
    md = Path(leak_run.result["postmortem"])
    html = md.with_suffix(".html")
    assert "## Evidence" in md.read_text() and "<html" in html.read_text()
    assert leaks(md.read_text()) == [] and leaks(html.read_text()) == []


def test_no_secret_in_notifications(leak_run: LeakRun) -> None:
    bodies = [r.body.decode("utf-8", "replace") for r in leak_run.hook.received]
    assert bodies and leaks("\n".join(bodies)) == []


def test_no_secret_in_the_receiver_log(leak_run: LeakRun) -> None:
    log = Path(leak_run.box.state_dir) / "logs" / "receiver.log"
    assert log.exists() and log.stat().st_size > 0
    assert leaks(log.read_text(errors="replace")) == []


def test_no_secret_in_the_flow_run_logs(leak_run: LeakRun) -> None:
    r = leak_run.flow.api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [leak_run.result["flow_run_id"]]}}, "limit": 200})
    r.raise_for_status()
    messages = "\n".join(entry["message"] for entry in r.json())
    assert messages and leaks(messages) == []
