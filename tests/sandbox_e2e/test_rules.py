"""The alert rules, evaluated by the real `promtool test rules` on synthetic series (no cluster needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from k8s_runbooks.sandbox.binaries import ensure_binaries
from k8s_runbooks.sandbox.launchers import CONFIG_DIR, render, sandbox_rule_params

POD = "checkout-5d9f7c8b6d-x7k2p"
POD2 = "checkout-5d9f7c8b6d-q4m8z"


@pytest.fixture(scope="module")
def promtool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_binaries(tmp_path_factory.mktemp("state"), ("promtool",))["promtool"]


def run_rule_test(promtool: Path, tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess[str]:
    render(CONFIG_DIR / "rules.yml", tmp_path / "rules.yml", **sandbox_rule_params())
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1s", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec))
    return subprocess.run([str(promtool), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ})


def test_pod_crash_looping_is_one_alert_per_deployment_not_per_pod(promtool: Path, tmp_path: Path) -> None:
    series = f'kube_pod_container_status_restarts_total{{namespace="shop",pod="{POD}",container="checkout",uid="u1"}}'
    second = f'kube_pod_container_status_restarts_total{{namespace="shop",pod="{POD2}",container="checkout",uid="u3"}}'
    other = 'kube_pod_container_status_restarts_total{namespace="shop",pod="payments-6f7d8c9b5-abcde",container="payments",uid="u2"}'
    result = run_rule_test(promtool, tmp_path, [{
        "interval": "1s",
        "input_series": [{"series": series, "values": "0 0 1 1 2 2 2 2 2 2"},
                         {"series": second, "values": "0 1 1 2 2 2 2 2 2 2"},
                         {"series": other, "values": "0 0 0 0 0 0 0 0 0 0"}],
        "alert_rule_test": [{
            "eval_time": "5s", "alertname": "PodCrashLooping",
            "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "shop", "deployment": "checkout"},
                "exp_annotations": {"summary": "2 pod(s) of shop/checkout restarting repeatedly",
                                    "runbook_url": "runbooks/pod-crash.md", "runbook": "pod-crash"},
            }],
        }],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_crash_loop_back_off_and_restarts_fire_once(promtool: Path, tmp_path: Path) -> None:
    waiting = (f'kube_pod_container_status_waiting_reason{{namespace="shop",pod="{POD}",container="checkout",'
               'reason="CrashLoopBackOff"}')
    restarts = f'kube_pod_container_status_restarts_total{{namespace="shop",pod="{POD}",container="checkout"}}'
    result = run_rule_test(promtool, tmp_path, [{
        "interval": "1s",
        "input_series": [{"series": waiting, "values": "0 1 1 1 1"}, {"series": restarts, "values": "0 1 1 1 1"}],
        "alert_rule_test": [{
            "eval_time": "3s", "alertname": "PodCrashLooping",
            "exp_alerts": [{  # both conditions hold, still exactly one alert
                "exp_labels": {"severity": "critical", "namespace": "shop", "deployment": "checkout"},
                "exp_annotations": {"summary": "1 pod(s) of shop/checkout restarting repeatedly",
                                    "runbook_url": "runbooks/pod-crash.md", "runbook": "pod-crash"},
            }],
        }],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_high_latency_fires_on_slow_p95_and_not_on_fast(promtool: Path, tmp_path: Path) -> None:
    def buckets(service: str, slow: int, fast: int) -> list[dict]:
        base = f'http_request_duration_seconds_bucket{{namespace="shop",service="{service}",pod="{service}-a-b"'
        return [
            {"series": base + ',le="0.1"}', "values": f"0+{fast}x60"},
            {"series": base + ',le="0.5"}', "values": f"0+{fast + slow}x60"},
            {"series": base + ',le="1"}', "values": f"0+{fast + slow}x60"},
            {"series": base + ',le="+Inf"}', "values": f"0+{fast + slow}x60"},
        ]
    result = run_rule_test(promtool, tmp_path, [{
        "interval": "1s",
        "input_series": buckets("checkout", slow=10, fast=0) + buckets("payments", slow=0, fast=10),
        "alert_rule_test": [
            {"eval_time": "3s", "alertname": "HighLatency", "exp_alerts": []},  # `for: 5s` not yet elapsed
            {"eval_time": "40s", "alertname": "HighLatency", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "shop", "service": "checkout"},
                "exp_annotations": {"summary": "p95 latency of shop/checkout is 480ms (> 300ms)",
                                    "runbook_url": "runbooks/high-latency.md", "runbook": "high-latency"},
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- the cluster fault families
NEW = "web-7c9d8f6b5d-k2m4x"  # a pod of the new revision
OLD = "web-5d9f7c8b6d-a1b2c"  # a pod of the previous one
KSM = 'job="kube-state-metrics",namespace="fam"'
INCIDENT = {"runbook_url": "runbooks/incident-response-plan.md", "runbook": "incident-response-plan"}


def family_alert(promtool: Path, tmp_path: Path, series: list[dict], alertname: str, at: str,
                 expected: list[dict]) -> None:
    result = run_rule_test(promtool, tmp_path, [{"interval": "1s", "input_series": series,
                                                  "alert_rule_test": [{"eval_time": at, "alertname": alertname,
                                                                       "exp_alerts": expected}]}])
    assert result.returncode == 0, result.stdout + result.stderr


def ready(pod: str, ok: bool, n: int = 40) -> list[dict]:
    return [{"series": f'kube_pod_status_ready{{{KSM},pod="{pod}",uid="u-{pod}",condition="true"}}', "values": f"{int(ok)}x{n}"},
            {"series": f'kube_pod_status_ready{{{KSM},pod="{pod}",uid="u-{pod}",condition="false"}}', "values": f"{int(not ok)}x{n}"}]


def restarts(pod: str, values: str) -> dict:
    return {"series": f'kube_pod_container_status_restarts_total{{{KSM},pod="{pod}",uid="u-{pod}",container="web"}}', "values": values}


def test_container_waiting_on_a_secret_or_an_image_is_one_alert_per_workload(promtool: Path, tmp_path: Path) -> None:
    """ErrImagePull and ImagePullBackOff alternate on one pod, a second pod waits on its config: one alert, two pods."""
    waiting = 'kube_pod_container_status_waiting_reason{' + KSM + ',pod="{pod}",uid="u",container="web",reason="{reason}"}'
    series = [{"series": waiting.replace("{pod}", NEW).replace("{reason}", "ErrImagePull"), "values": "1 1 _ _ 1 1 _ _ 1 1 _ _ 1 1 _ _"},
              {"series": waiting.replace("{pod}", NEW).replace("{reason}", "ImagePullBackOff"), "values": "_ _ 1 1 _ _ 1 1 _ _ 1 1 _ _ 1 1"},
              {"series": waiting.replace("{pod}", OLD).replace("{reason}", "CreateContainerConfigError"), "values": "1x15"},
              {"series": waiting.replace("{pod}", "api-5d9f7c8b6d-zzzzz").replace("{reason}", "ContainerCreating"), "values": "1x15"},
              *ready(NEW, False, 15), *ready(OLD, False, 15)]
    family_alert(promtool, tmp_path, series, "KubeContainerWaiting", "3s", [])  # for: 5s not elapsed
    family_alert(promtool, tmp_path, series, "KubeContainerWaiting", "10s", [{
        "exp_labels": {"severity": "warning", "namespace": "fam", "deployment": "web"},
        "exp_annotations": {"summary": "2 pod(s) of fam/web cannot start their containers (configuration or image)", **INCIDENT}}])
    # the same pods are not Ready, but they have their own alert: KubePodNotReady stays quiet
    family_alert(promtool, tmp_path, series, "KubePodNotReady", "14s", [])


def test_pod_not_ready_pending_or_failing_readiness_but_not_crash_looping(promtool: Path, tmp_path: Path) -> None:
    crashing = "web-7c9d8f6b5d-crash"
    series = [*ready(NEW, False), *ready(OLD, True), *ready(crashing, False), restarts(crashing, "0+1x40"),
              {"series": f'kube_pod_status_phase{{{KSM},pod="{NEW}",uid="u-{NEW}",phase="Pending"}}', "values": "1x40"}]
    family_alert(promtool, tmp_path, series, "KubePodNotReady", "8s", [])  # for: 10s
    family_alert(promtool, tmp_path, series, "KubePodNotReady", "15s", [{
        "exp_labels": {"severity": "warning", "namespace": "fam", "deployment": "web"},
        "exp_annotations": {"summary": "1 pod(s) of fam/web not Ready (Pending or failing readiness)", **INCIDENT}}])
    terminating = [*ready(NEW, False), {"series": f'kube_pod_deletion_timestamp{{{KSM},pod="{NEW}",uid="u-{NEW}"}}', "values": "1.7e9x40"}]
    family_alert(promtool, tmp_path, terminating, "KubePodNotReady", "15s", [])  # a terminating pod is not an incident


def test_rollout_stuck_when_the_replicaset_cannot_create_pods(promtool: Path, tmp_path: Path) -> None:
    dep = f'{{{KSM},deployment="web"}}'
    quota = [{"series": f"kube_deployment_spec_replicas{dep}", "values": "2x40"},
             {"series": f"kube_deployment_status_replicas_updated{dep}", "values": "0x40"},
             *ready(OLD, True), *ready("web-5d9f7c8b6d-d3e4f", True)]
    family_alert(promtool, tmp_path, quota, "KubeDeploymentRolloutStuck", "15s", [{
        "exp_labels": {"severity": "warning", "namespace": "fam", "deployment": "web"},
        "exp_annotations": {"summary": "rollout of fam/web is not progressing (pods cannot be created)", **INCIDENT}}])
    # a new pod exists but is not Ready: that is KubePodNotReady's, not a stuck rollout
    family_alert(promtool, tmp_path, [*quota, *ready(NEW, False)], "KubeDeploymentRolloutStuck", "15s", [])


def test_service_without_a_ready_endpoint(promtool: Path, tmp_path: Path) -> None:
    series = [{"series": f'kube_endpoint_info{{{KSM},endpoint="web"}}', "values": "1x20"},
              {"series": f'kube_endpoint_info{{{KSM},endpoint="api"}}', "values": "1x20"},
              {"series": f'kube_endpoint_address{{{KSM},endpoint="api",ip="127.1.0.5",ready="true"}}', "values": "1x20"},
              {"series": f'kube_endpoint_address{{{KSM},endpoint="web",ip="127.1.0.6",ready="false"}}', "values": "1x20"}]
    family_alert(promtool, tmp_path, series, "KubeServiceWithoutEndpoints", "8s", [{
        "exp_labels": {"severity": "critical", "namespace": "fam", "endpoint": "web", "service": "web"},
        "exp_annotations": {"summary": "Service fam/web has no ready endpoint: requests to it fail", **INCIDENT}}])
