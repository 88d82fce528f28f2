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
