"""The monitoring objects agree with what runs: the PrometheusRule is the sandbox's rules file rendered with
cluster windows and passes `promtool check rules`; the AlertmanagerConfig routes exactly those alerts to the
receiver's real endpoint and passes `amtool check-config`; the dashboard's PromQL parses (promtool) and
names only metrics the receiver and the drills export."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from k8s_runbooks.alerts.metrics import ReceiverMetrics
from k8s_runbooks_prefect.alerts.server import build_app
from k8s_runbooks.drills.model import Phase, Scorecard
from k8s_runbooks.drills.pushgateway import metrics_text
from k8s_runbooks.sandbox.binaries import ensure_binaries
from k8s_runbooks.sandbox.launchers import CONFIG_DIR
from k8s_runbooks.settings import Settings
from tests.manifests.conftest import K8S, REPO, one

# The cluster's windows (the sandbox renders the same template with seconds-long ones).
CLUSTER_RULE_PARAMS = {"latency_window": "5m", "latency_for": "5m", "crash_window": "10m", "crash_for": "2m",
                       "waiting_for": "10m", "not_ready_for": "15m", "rollout_for": "15m", "endpoints_for": "5m",
                       "runbook_base_url": "https://github.com/YOUR-ORG/k8s-runbooks/blob/main/runbooks"}
DASHBOARD = K8S / "base" / "monitoring" / "dashboards" / "k8s-runbooks.json"
# Grafana's variables, replaced by what Grafana would substitute, so promtool parses the query.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "7d", "$__interval": "1m"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ensure_binaries(tmp_path_factory.mktemp("tools"), ("promtool", "amtool"))


@pytest.fixture(scope="module")
def base(builds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return builds["base"]


def rendered_sandbox_groups() -> list[dict[str, Any]]:
    text = Template((CONFIG_DIR / "rules.yml").read_text()).substitute(**CLUSTER_RULE_PARAMS)
    return yaml.safe_load(text)["groups"]


def test_prometheus_rule_is_the_sandbox_rules_file(base: list[dict[str, Any]]) -> None:
    rule = one(base, "PrometheusRule", "k8s-runbooks")
    expected = rendered_sandbox_groups()
    assert rule["spec"]["groups"] == expected, (
        "deployments/k8s/base/monitoring/prometheusrule.yaml drifted from src/k8s_runbooks/sandbox/config/rules.yml; "
        f"its spec.groups must be:\n{yaml.safe_dump(expected, sort_keys=False)}")


def test_prometheus_rule_passes_promtool(base: list[dict[str, Any]], tools: dict[str, Path], tmp_path: Path) -> None:
    rule = one(base, "PrometheusRule", "k8s-runbooks")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([str(tools["promtool"]), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_every_alert_links_its_runbook(base: list[dict[str, Any]]) -> None:
    rules = [r for g in one(base, "PrometheusRule", "k8s-runbooks")["spec"]["groups"] for r in g["rules"]]
    for r in rules:
        url = r["annotations"]["runbook_url"]
        name = url.rsplit("/", 1)[-1]
        assert url.startswith("https://") and name == f"{r['annotations']['runbook']}.md", url
        assert (REPO / "runbooks" / name).is_file(), f"{r['alert']}: runbooks/{name} does not exist"


def _alertmanager_yml(amc: dict[str, Any], token_file: Path) -> dict[str, Any]:
    """The AlertmanagerConfig as the operator turns it into alertmanager.yml (its documented field mapping)."""
    route, snake = amc["spec"]["route"], {"groupBy": "group_by", "groupWait": "group_wait",
                                          "groupInterval": "group_interval", "repeatInterval": "repeat_interval"}
    out_route = {snake[k]: v for k, v in route.items() if k in snake}
    out_route["receiver"] = route["receiver"]
    out_route["matchers"] = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route["matchers"]]
    receivers = []
    for rcv in amc["spec"]["receivers"]:
        hooks = [{"url": w["url"], "send_resolved": w["sendResolved"], "max_alerts": w.get("maxAlerts", 0),
                  "http_config": {"authorization": {"type": w["httpConfig"]["authorization"]["type"],
                                                    "credentials_file": str(token_file)}}}
                 for w in rcv["webhookConfigs"]]
        receivers.append({"name": rcv["name"], "webhook_configs": hooks})
    return {"route": {"receiver": "null", "routes": [{**out_route, "continue": True}]},
            "receivers": [{"name": "null"}, *receivers]}


def test_alertmanager_config_routes_the_rule_alerts_to_the_receiver(base: list[dict[str, Any]], tools: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    amc = one(base, "AlertmanagerConfig", "k8s-runbooks")
    token = tmp_path / "token"
    token.write_text("x")
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_alertmanager_yml(amc, token)))
    proc = subprocess.run([str(tools["amtool"]), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Exactly the alerts of the PrometheusRule, which are the ones deployments/alert-routes.yaml routes.
    matcher = next(m for m in amc["spec"]["route"]["matchers"] if m["name"] == "alertname")
    alerts = {r["alert"] for g in one(base, "PrometheusRule", "k8s-runbooks")["spec"]["groups"] for r in g["rules"]}
    assert {a for a in alerts if re.fullmatch(matcher["value"], a)} == alerts
    routes = yaml.safe_load((REPO / "deployments" / "alert-routes.yaml").read_text())["routes"]
    routed = {r["match"]["alertname"] for r in routes if "alertmanager" in r["sources"] and "alertname" in r.get("match", {})}
    assert routed == alerts

    # The webhook reaches the receiver Service on an endpoint the receiver serves, with the token it checks.
    hook = amc["spec"]["receivers"][0]["webhookConfigs"][0]
    svc = one(base, "Service", "k8s-runbooks-receiver")
    m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)(/.*)", hook["url"])
    assert m and (m[1], m[2], int(m[3])) == (svc["metadata"]["name"], svc["metadata"]["namespace"], svc["spec"]["ports"][0]["port"])
    app = build_app(Settings(), routes=REPO / "deployments" / "alert-routes.yaml", spool_path=tmp_path / "spool.sqlite3",
                    dispatch=False)
    assert m[4] in {getattr(r, "path", None) for r in app.routes}
    receiver_env = one(base, "Deployment", "k8s-runbooks-receiver")["spec"]["template"]["spec"]["containers"][0]["env"]
    token_ref = next(e for e in receiver_env if e["name"] == "K8S_RUNBOOKS_RECEIVER_TOKEN")["valueFrom"]["secretKeyRef"]
    creds = hook["httpConfig"]["authorization"]["credentials"]
    assert (creds["name"], creds["key"]) == (token_ref["name"], token_ref["key"])
    assert amc["metadata"]["namespace"] == svc["metadata"]["namespace"], "the Secret must be in the AlertmanagerConfig's namespace"


def exported_metrics() -> set[str]:
    """Series names the receiver's registry and a drill's Pushgateway push expose (plus Prometheus's `up`)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    # From the families, not the samples: a labelled counter has no sample until its first increment.
    names = {fam.name + sfx for fam in ReceiverMetrics().registry.collect() for sfx in suffixes[fam.type]}
    now = datetime.now(timezone.utc)
    card = Scorecard(namespace="shop", deployment="checkout", scenario="pod-crash", outcome="passed", rollback_ok=True,
                     started_at=now, finished_at=now,
                     phases=[Phase(name="recover", seconds=12.0, target_seconds=300, met=True)])
    names |= {line.split("{")[0].split(" ")[0] for line in metrics_text(card).splitlines() if line and not line.startswith("#")}
    return names | {"up"}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(\\.|[^"\\])*"', "", expr)                     # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                            # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                            # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    tokens = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)", expr)
    return {name for name, call in tokens if not call and name.lower() not in PROMQL_WORDS}


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def test_dashboard_queries_parse(tools: dict[str, Path], tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    assert not [q for _, q in queries if "$" in q], "a Grafana variable promtool cannot parse is left"
    rules = [{"record": f"dashboard:query_{i}:check", "expr": q} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([str(tools["promtool"]), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_uses_only_exported_metrics() -> None:
    exported = exported_metrics()
    assert {"k8s_runbooks_receiver_flow_runs_created_total", "k8s_runbooks_drill_phase_seconds",
            "k8s_runbooks_receiver_spool_depth"} <= exported
    used: dict[str, set[str]] = {title: metric_names(q) for title, q in dashboard_queries()}
    unknown = {title: names - exported for title, names in used.items() if names - exported}
    assert not unknown, f"dashboard queries name metrics nobody exports: {unknown}"
    assert all(used.values()), [t for t, n in used.items() if not n]
    # The parser sees through functions and aggregations, and would catch a typo:
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(foo_bucket{a="b"}[5m])))') == {"foo_bucket"}


def test_dashboard_config_map_carries_the_file_for_grafana(base: list[dict[str, Any]]) -> None:
    cm = one(base, "ConfigMap", "k8s-runbooks-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["k8s-runbooks.json"]) == json.loads(DASHBOARD.read_text())
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert titles == {"Runbook runs", "Time to recover (drills)", "Drill scores", "Alert receiver health"}
