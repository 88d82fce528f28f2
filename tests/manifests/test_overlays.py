"""Every overlay builds and every object validates against the Kubernetes schemas, offline.

Core objects: `kubernetes-validate` (the API's OpenAPI schemas, strict: unknown fields fail) for the newest
Kubernetes it ships and for the oldest GKE still supports. Prometheus Operator objects: the schemas in
`schemas/`. Then what a schema cannot see: references that must resolve, selectors that must select,
non-root pods with resources, no secrets, RBAC without wildcards.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.manifests.conftest import BUILDS, REPO, find, one, pod_templates

VERSIONS = ["1.37.0", "1.31.0"]  # newest in kubernetes-validate; GKE's oldest supported minor (late 2026)
CRD_SCHEMAS = yaml.safe_load((Path(__file__).parent / "schemas" / "monitoring.coreos.com.yaml").read_text())
# Created by the operator before applying (deployments/README.md, "Secrets to create"); never in the repo.
USER_SECRETS = {"k8s-runbooks-receiver", "k8s-runbooks-secrets", "prefect-postgres", "prefect-api-auth"}
OUR_IMAGE = re.compile(r"(^k8s-runbooks:dev$)|(-docker\.pkg\.dev/.+/k8s-runbooks/runbooks:\d+\.\d+\.\d+$)")


def crd_errors(obj: dict[str, Any]) -> list[str]:
    schema = {**CRD_SCHEMAS[obj["kind"]], "$defs": CRD_SCHEMAS["$defs"]}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_validates_against_its_schema(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objs = builds[build]
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Role",
            "RoleBinding", "ClusterRole", "PrometheusRule", "AlertmanagerConfig", "ConfigMap"} <= {o["kind"] for o in objs}
    errors: list[str] = []
    for obj in objs:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            errors += [f"{label}: {e}" for e in crd_errors(obj)]
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{label} (Kubernetes {version}): {'/'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{label}: no schema for {obj['apiVersion']} in Kubernetes {version}")
    assert not errors, "\n".join(errors)


def test_the_crd_schemas_reject_a_misspelt_field(builds: dict[str, list[dict[str, Any]]]) -> None:
    amc = one(builds["base"], "AlertmanagerConfig", "k8s-runbooks")
    broken = yaml.safe_load(yaml.safe_dump(amc))
    broken["spec"]["receivers"][0]["webhookConfigs"][0]["sendResolve"] = True
    assert crd_errors(amc) == []
    assert any("sendResolve" in e for e in crd_errors(broken))


@pytest.mark.parametrize("build", BUILDS)
def test_pods_run_non_root_read_only_with_requests_and_limits(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    problems: list[str] = []
    for name, template in pod_templates(builds[build]):
        spec = template["spec"]
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot not set")
        if spec.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        for c in spec["containers"]:
            sc, res = c.get("securityContext", {}), c.get("resources", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}/{c['name']}: privilege escalation allowed or capabilities kept")
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or "memory" not in res.get("limits", {}):
                problems.append(f"{name}/{c['name']}: cpu/memory requests and a memory limit are required")
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{name}/{c['name']}: image {image} is not pinned to a tag")
            if not image.startswith("postgres:") and not OUR_IMAGE.search(image):
                problems.append(f"{name}/{c['name']}: image {image} is not this overlay's k8s-runbooks image")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("build", BUILDS)
def test_every_reference_resolves(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objs = builds[build]
    names = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}

    def exists(kind: str, ns: str, name: str) -> bool:
        return (kind, ns, name) in names or (kind == "Secret" and name in USER_SECRETS)

    missing: list[str] = []
    for label, template in pod_templates(objs):
        ns = next(o for o in objs if f"{o['kind']}/{o['metadata']['name']}" == label)["metadata"]["namespace"]
        spec = template["spec"]
        refs = [("ServiceAccount", spec.get("serviceAccountName", "default"))]
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "persistentVolumeClaim" in v:
                refs.append(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    refs.append(("ConfigMap", src["configMapRef"]["name"]))
                if "secretRef" in src:
                    refs.append(("Secret", src["secretRef"]["name"]))
            for env in c.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    refs.append(("Secret", env["valueFrom"]["secretKeyRef"]["name"]))
        if spec.get("serviceAccountName") is None and label.endswith(("receiver", "worker")):
            missing.append(f"{label}: runs under the namespace's default ServiceAccount")
        missing += [f"{label}: {kind} {name} not in the build" for kind, name in refs
                    if kind != "ServiceAccount" or name != "default" if not exists(kind, ns, name)]
    for binding in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        if not exists(ref["kind"], binding["metadata"].get("namespace") if ref["kind"] == "Role" else None, ref["name"]):
            missing.append(f"{binding['kind']}/{binding['metadata']['name']}: {ref['kind']} {ref['name']} missing")
        for s in binding["subjects"]:
            if not exists("ServiceAccount", s["namespace"], s["name"]):
                missing.append(f"{binding['kind']}/{binding['metadata']['name']}: ServiceAccount {s['namespace']}/{s['name']} missing")
    assert not missing, "\n".join(missing)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("build", BUILDS)
def test_services_budgets_and_policies_select_pods(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objs = builds[build]
    pods = {label: t["metadata"]["labels"] for label, t in pod_templates(objs)}
    problems = []
    for svc in find(objs, "Service"):
        matched = [label for label, labels in pods.items() if _selects(svc["spec"]["selector"], labels)]
        if len(matched) != 1:
            problems.append(f"Service/{svc['metadata']['name']} selects {matched}")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in find(objs, kind):
            sel = (o["spec"].get("selector") or o["spec"].get("podSelector"))["matchLabels"]
            if not any(_selects(sel, labels) for labels in pods.values()):
                problems.append(f"{kind}/{o['metadata']['name']} selects no pod")
    sm = one(objs, "ServiceMonitor", "k8s-runbooks-receiver")
    svc = one(objs, "Service", "k8s-runbooks-receiver")
    assert _selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    receiver = one(objs, "Deployment", "k8s-runbooks-receiver")["spec"]["template"]["spec"]
    probes = [receiver["containers"][0].get(p) for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(p and p["httpGet"]["path"] == "/healthz" for p in probes), probes
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("build", BUILDS)
def test_no_secret_values_in_manifests(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objs = builds[build]
    assert not find(objs, "Secret"), "Secrets are created by the operator, never shipped (deployments/README.md)"
    text = yaml.safe_dump_all(objs)
    assert not re.search(r"(?i)(password|token|api[_-]?key|secret)\s*:\s*['\"]?[A-Za-z0-9+/_-]{12,}", text)
    for label, template in pod_templates(objs):
        for c in template["spec"]["containers"]:
            for env in c.get("env", []):
                if re.search(r"(?i)token|password|api_key|secret|dsn", env["name"]):
                    assert "valueFrom" in env, f"{label}: {env['name']} must come from a Secret"


@pytest.mark.parametrize("build", BUILDS)
def test_rbac_has_no_wildcards_and_the_cluster_role_only_reads(builds: dict[str, list[dict[str, Any]]], build: str) -> None:
    objs = builds[build]
    for role in find(objs, "Role") + find(objs, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{role['kind']}/{role['metadata']['name']}: wildcard {field}"
            if role["kind"] == "ClusterRole":
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, f"ClusterRole {role['metadata']['name']} writes"
    receiver_sa = one(objs, "ServiceAccount", "k8s-runbooks-receiver")
    assert receiver_sa.get("automountServiceAccountToken") is False
    bound = {(b["metadata"]["namespace"], s["name"]) for b in find(objs, "RoleBinding") for s in b["subjects"]}
    assert ("shop", "k8s-runbooks") in bound, "the runbooks' identity is bound in the target namespace"
    assert not any(sa == "k8s-runbooks-receiver" for _, sa in bound), "the receiver needs no Kubernetes API access"


def test_gke_overlay_uses_workload_identity_filestore_and_the_registry(builds: dict[str, list[dict[str, Any]]]) -> None:
    objs = builds["gke"]
    sa = one(objs, "ServiceAccount", "k8s-runbooks")
    assert re.fullmatch(r"[a-z0-9-]+@[A-Za-z0-9-]+\.iam\.gserviceaccount\.com",
                        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"])
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "k8s-runbooks-state"]
    images = {c["image"] for _, t in pod_templates(objs) for c in t["spec"]["containers"]}
    assert images and all("-docker.pkg.dev/" in i for i in images), images
    config = one(objs, "ConfigMap", "k8s-runbooks-config")["data"]
    assert config["PREFECT_API_URL"].startswith("https://api.prefect.cloud/api/accounts/")
    assert not find(objs, "StatefulSet", "prefect-postgres")
    assert find(builds["gke+prefect-server"], "StatefulSet", "prefect-postgres")


def test_kind_overlay_runs_the_loaded_image_and_its_own_prefect_server(builds: dict[str, list[dict[str, Any]]]) -> None:
    objs = builds["kind"]
    for label, template in pod_templates(objs):
        for c in template["spec"]["containers"]:
            if not c["image"].startswith("postgres:"):
                assert c["image"] == "k8s-runbooks:dev" and c["imagePullPolicy"] == "Never", (label, c["image"])
    config = one(objs, "ConfigMap", "k8s-runbooks-config")["data"]
    server_svc = one(objs, "Service", "prefect-server")
    port = server_svc["spec"]["ports"][0]["port"]
    assert config["PREFECT_API_URL"] == f"http://prefect-server.{server_svc['metadata']['namespace']}.svc:{port}/api"


def test_user_secrets_are_documented() -> None:
    readme = (REPO / "deployments" / "README.md").read_text()
    for name in USER_SECRETS:
        assert f"`{name}`" in readme, f"Secret {name} is not documented in deployments/README.md"
