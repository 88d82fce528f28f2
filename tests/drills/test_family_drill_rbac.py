"""The fault-family drills that need more than the runbooks' Role (`missing-secret`: Secrets, `quota`: ResourceQuotas,
`taint`: nodes), run as the sandbox's runner runs a scheduled drill: as the least-privilege ServiceAccount
`k8s-runbooks`, under the RBAC the sandbox enforces.

Without the opt-in manifest (deployments/k8s/drills/rbac-drill-injector.yaml) each one is refused before anything
changes: the run ends with the missing grant (verbs, resource, where) and the manifest to apply, in the run's state
message, its scorecard and the CLI's output, with no traceback; the cluster is as before (objects, node taints, and
no write by the account). With the manifest applied (its Role copied to the drill namespaces, as the README says),
the same drills inject their fault and clear it, and what the account asked for beyond the runbooks' Role is exactly
what the manifest grants."""

from __future__ import annotations

import random
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_runbooks import rbac
from k8s_runbooks.drills.fault_rbac import INJECTOR_CLUSTER_ROLE, INJECTOR_MANIFEST, INJECTOR_ROLE
from k8s_runbooks.drills.model import Scorecard
from k8s_runbooks.sandbox.demo_workload import ensure_workload, set_fault, wait_ready
from k8s_runbooks.sandbox.identities import apply
from tests.conftest import CLI, REPO, Sandbox
from tests.helpers.audit import requests_since, user_requests
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SUFFIX = "".join(random.choices(string.ascii_lowercase, k=4))
NS_A, NS_B = f"dinj-a-{SUFFIX}", f"dinj-b-{SUFFIX}"  # not routed by the test receiver: no runbook answers
APP = "web"
KINDS = ("missing-secret", "quota", "taint")
RUN_TIMEOUT = 240.0
FAST = {"response": "none", "steady_state": {"p95_threshold_ms": None, "check_alerts": False},
        "post_verify_timeout_seconds": 120}


def missing_grant(kind: str, ns: str) -> str:
    return {"missing-secret": f"missing RBAC grant get, create, delete secrets in namespace {ns}",
            "quota": f"missing RBAC grant create, delete resourcequotas in namespace {ns}",
            "taint": "missing RBAC grant get, patch nodes (cluster-wide)"}[kind]


def opt_in(kind: str, ns: str) -> str:
    objects = (f"ClusterRole and ClusterRoleBinding {INJECTOR_CLUSTER_ROLE}" if kind == "taint"
               else f"Role and RoleBinding {INJECTOR_ROLE} in namespace {ns}")
    return f"apply the opt-in manifest {INJECTOR_MANIFEST} ({objects}"


def our_tracebacks(logs: str) -> list[str]:
    """The exceptions a run's log shows a traceback of, but Prefect's own: a run started by a runner or a worker
    (`python -m prefect.engine`) whose flow returns a Failed state always logs "Engine execution exited with
    unexpected exception" and a traceback ending in `prefect.exceptions.FailedRun: <the state's message>`."""
    blocks = logs.split("Traceback (most recent call last):")[1:]
    last_lines = [next((ln for ln in block.splitlines() if ln and not ln.startswith((" ", "\t"))), "") for block in blocks]
    return [ln for ln in last_lines if not ln.startswith("prefect.exceptions.FailedRun: drill ")]


@dataclass
class Run:
    id: str
    state: str
    message: str
    card: Scorecard | None
    logs: str


class Drills:
    """Family drills run by the sandbox's runner (as a schedule would start them), read back over Prefect's API."""

    def __init__(self, box: Sandbox) -> None:
        assert box.prefect_api_url
        self.box = box
        self.api = httpx.Client(base_url=box.prefect_api_url, timeout=15)
        api = k8s_config.new_client_from_config(str(box.kubeconfig))  # the admin: set-up and looking, never the drill
        self.core, self.apps, self.rbac = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.RbacAuthorizationV1Api(api)

    def start(self, kind: str, ns: str) -> str:
        dep = self.api.get(f"/deployments/name/drill-fault-family/drill-{kind}")
        dep.raise_for_status()
        params = {"namespace": ns, "deployment": APP, "fault": {"kind": kind}, **FAST}
        resp = self.api.post(f"/deployments/{dep.json()['id']}/create_flow_run", json={"parameters": {"params": params}})
        resp.raise_for_status()
        return str(resp.json()["id"])

    def finish(self, run_id: str) -> Run:
        def final() -> dict[str, Any] | None:
            run = self.api.get(f"/flow_runs/{run_id}").json()
            return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        run = wait_for(final, RUN_TIMEOUT, f"drill run {run_id} to end", interval=1.0)
        arts = self.api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]},
                                                                      "key": {"any_": ["drill-scorecard"]}}}).json()
        arts.sort(key=lambda a: a["created"])
        card = Scorecard.from_markdown(arts[-1]["data"]) if arts else None
        logs = self.api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
        return Run(run_id, run["state"]["type"], run["state"].get("message") or "", card,
                   "\n".join(entry["message"] for entry in logs))

    def cluster_view(self) -> dict[str, Any]:
        """What the three faults change: the Deployments, Secrets, quotas and node taints."""
        out: dict[str, Any] = {"nodes": {n.metadata.name: [(t.key, t.value, t.effect) for t in n.spec.taints or []]
                                         for n in self.core.list_node().items}}
        for ns in (NS_A, NS_B):
            dep = self.apps.read_namespaced_deployment(APP, ns)
            out[ns] = {"deployment": (dep.metadata.resource_version, dep.metadata.generation),
                       "secrets": sorted(s.metadata.name for s in self.core.list_namespaced_secret(ns).items),
                       "quotas": sorted(q.metadata.name for q in self.core.list_namespaced_resource_quota(ns).items),
                       "pods": sorted(p.metadata.name for p in self.core.list_namespaced_pod(ns).items)}
        return out


def _writes(requests: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The account's writes to the drill namespaces and cluster-scoped objects (the access reviews are questions)."""
    return sorted((r["verb"], r["resource"], r["namespace"]) for r in requests
                  if r["verb"] not in ("get", "list", "watch") and r["resource"] != "selfsubjectaccessreviews"
                  and r["namespace"] in (NS_A, NS_B, ""))


def _injector_docs(namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
    """The opt-in manifest as deployments/README.md says to apply it: its Role pair copied to each drill namespace."""
    docs = [d for d in yaml.safe_load_all((REPO / INJECTOR_MANIFEST).read_text()) if d]
    out = [d for d in docs if d["kind"].startswith("Cluster")]
    for ns in namespaces:
        out += [{**d, "metadata": {**d["metadata"], "namespace": ns}} for d in docs if not d["kind"].startswith("Cluster")]
    return out


@pytest.fixture(scope="module")
def drills(sandbox_only: Sandbox) -> Iterator[Drills]:
    box = sandbox_only
    d = Drills(box)
    for ns in (NS_A, NS_B):  # labelled for drills, with the runbooks' Role (base/rbac.yaml), nothing more
        ensure_workload(box.kubeconfig, ns, {APP: 2})
    try:
        wait_ready(box.kubeconfig, NS_A, [APP], timeout_s=120)
        wait_ready(box.kubeconfig, NS_B, [APP], timeout_s=120)
        yield d
    finally:
        for ns in (NS_A, NS_B):  # whatever a failed test left: as the admin, through the guard
            set_fault(box.kubeconfig, ns, APP, "clear")
        for name in (INJECTOR_CLUSTER_ROLE,):
            for delete in (d.rbac.delete_cluster_role_binding, d.rbac.delete_cluster_role):
                try:
                    delete(name)
                except k8s.ApiException as exc:
                    if exc.status != 404:
                        raise
        for ns in (NS_A, NS_B):
            d.core.delete_namespace(ns)


def test_without_the_opt_in_each_drill_is_refused_up_front_naming_the_grant_and_the_manifest(drills: Drills) -> None:
    box = drills.box
    before, audit_before = drills.cluster_view(), user_requests(box.api_url)
    runs = {kind: drills.start(kind, NS_A) for kind in KINDS}
    # The same refusal from a shell, as the user sees it (the CLI as the account: K8S_RUNBOOKS_KUBECONFIG)
    cli = subprocess.run([*CLI, "drill", "family", "--fault", "quota", "-n", NS_B, "-d", APP, "--response", "none"],
                         capture_output=True, text=True, env={**box.env, "COLUMNS": "200"}, timeout=RUN_TIMEOUT, cwd=REPO)
    done = {kind: drills.finish(run_id) for kind, run_id in runs.items()}
    requests = requests_since(audit_before, user_requests(box.api_url))

    for kind, run in done.items():
        expected = (missing_grant(kind, NS_A), opt_in(kind, NS_A), "nothing injected")
        assert run.state == "FAILED" and run.message.startswith("drill refused: "), (kind, run.state, run.message)
        assert all(e in run.message for e in expected), (kind, run.message)
        assert run.card is not None and run.card.outcome == "refused", (kind, run.card)
        assert all(e in run.card.outcome_detail for e in expected), (kind, run.card.outcome_detail)
        assert run.card.injected_at is None and run.card.phases == [], (kind, run.card)
        assert run.card.rollback == ["nothing was injected: nothing to roll back"], (kind, run.card.rollback)
        assert our_tracebacks(run.logs) == [], (kind, run.logs[-3000:])
    shown = " ".join(cli.stdout.split())
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, (cli.returncode, cli.stdout[-3000:], cli.stderr[-3000:])
    assert "Outcome: REFUSED" in shown and missing_grant("quota", NS_B) in shown and opt_in("quota", NS_B) in shown, shown

    assert drills.cluster_view() == before
    assert _writes(requests) == [], "the account changed something while being refused"
    assert {r["resource"] for r in requests if r["verb"] == "create"} == {"selfsubjectaccessreviews"}


def test_with_the_opt_in_manifest_the_drills_inject_and_clear_needing_exactly_its_rules(drills: Drills) -> None:
    box = drills.box
    apply(box.api_url, _injector_docs((NS_A, NS_B)))
    audit_before = user_requests(box.api_url)
    # missing-secret and quota side by side (each its own namespace: a quota caps the whole namespace); taint
    # stops scheduling on every node, so it runs alone.
    first = {"missing-secret": drills.start("missing-secret", NS_A), "quota": drills.start("quota", NS_B)}
    done = {kind: drills.finish(run_id) for kind, run_id in first.items()}
    done["taint"] = drills.finish(drills.start("taint", NS_A))
    requests = requests_since(audit_before, user_requests(box.api_url))

    for kind, run in done.items():
        card = run.card
        assert card is not None and card.injected_at is not None, (kind, run.state, run.message)
        assert any(line.startswith("remove fault: allowed: ") and f"cleared {kind}" in line for line in card.rollback), (
            kind, card.rollback)
        assert card.rollback_ok, (kind, card.rollback, card.steady_after)
        # response "none": nobody answers, so the phases of the answer (diagnose, escalate) are the ones missed
        assert card.outcome_detail == "missed: diagnose, escalate", (kind, card.outcome, card.outcome_detail)
        assert our_tracebacks(run.logs) == [], (kind, run.logs[-3000:])
    nodes = drills.core.list_node().items
    assert not [n.metadata.name for n in nodes if any(t.key == "dedicated" for t in n.spec.taints or [])]
    for ns in (NS_A, NS_B):
        assert [q.metadata.name for q in drills.core.list_namespaced_resource_quota(ns).items] == []
        assert [s.metadata.name for s in drills.core.list_namespaced_secret(ns).items
                if s.metadata.name.startswith(APP)] == []

    # beyond the runbooks' Role, the injectors asked for exactly what the opt-in manifest grants
    mine = [r for r in requests if r["namespace"] in (NS_A, NS_B, "")]
    beyond = rbac.derive(mine)
    base = rbac.shipped((REPO / "deployments" / "k8s" / "base" / "rbac.yaml").read_text(), "k8s-runbooks")
    beyond = rbac.Rules(beyond.namespaced - base.namespaced, beyond.cluster - base.cluster)
    granted = rbac.shipped((REPO / INJECTOR_MANIFEST).read_text(), "k8s-runbooks")
    assert rbac.compare(beyond, granted) == {"missing": {"namespaced": [], "cluster": []},
                                             "extra": {"namespaced": [], "cluster": []}}, rbac.render(beyond)
