"""The Kubernetes work pool's base job template, rendered the way the worker renders it (Prefect's own
templating), is a valid Job that runs as the runbooks' identity with the settings and state the manifests provide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
from prefect.utilities.templating import apply_values, find_placeholders

from tests.manifests.conftest import K8S, REPO, one

TEMPLATE = K8S / "base" / "base-job-template.json"


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}


def test_placeholders_are_declared_variables() -> None:
    template = json.loads(TEMPLATE.read_text())
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    declared = set(template["variables"]["properties"])
    assert used <= declared, f"undeclared: {used - declared}"


def test_rendered_job_is_valid_and_runs_prefects_command_through_env() -> None:
    template = json.loads(TEMPLATE.read_text())
    values = {**defaults(template), "name": "pod-crash-abc", "env": {"K8S_RUNBOOKS_COOLDOWN_SECONDS": "300"},
              "labels": {"prefect.io/flow-run-id": "x"}}
    job = apply_values(template["job_configuration"]["job_manifest"], values)
    # What prefect-kubernetes does next: env dict -> list; without a `command` variable the args are
    # Prefect's flow-run command, run by /usr/bin/env because the image's ENTRYPOINT is the k8s-runbooks CLI.
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "args" not in container, "unset `command` must leave args for the worker to fill"
    assert container["command"] == ["/usr/bin/env"]
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    container["args"] = ["prefect", "flow-run", "execute"]
    # prefect-kubernetes 0.8 refuses a template without these two under the pod spec ("Job is missing required
    # attributes at /spec/template/spec/completions, .../parallelism": the worker crashed every run before they
    # were added); the API server drops the unknown fields with a warning (fieldValidation defaults to Warn).
    pod_spec = job["spec"]["template"]["spec"]
    assert (pod_spec.pop("completions"), pod_spec.pop("parallelism")) == (1, 1)
    for version in ("1.37.0", "1.31.0"):
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["namespace"] == "k8s-runbooks"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_job_uses_what_the_manifests_create(builds: dict[str, list[dict[str, Any]]]) -> None:
    template = json.loads(TEMPLATE.read_text())
    job = apply_values(template["job_configuration"]["job_manifest"], {**defaults(template), "name": "x"})
    spec = job["spec"]["template"]["spec"]
    objs = builds["base"]
    ns = job["metadata"]["namespace"]
    one(objs, "ServiceAccount", spec["serviceAccountName"])
    for v in spec["volumes"]:
        if "persistentVolumeClaim" in v:
            pvc = one(objs, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
            assert pvc["metadata"]["namespace"] == ns
    for src in spec["containers"][0]["envFrom"]:
        if "configMapRef" in src:
            assert one(objs, "ConfigMap", src["configMapRef"]["name"])["metadata"]["namespace"] == ns
    # The guard's shared state (cooldowns, budgets) is in the cluster (Leases): no shared volume, no
    # ReadWriteMany. The audit file is the Job's own; its durable copy is the Prefect event of each record.
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/var/lib/k8s-runbooks/state"] == "state"
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"]), spec["volumes"]
    # The worker Role covers what it does with these Jobs, in the Jobs' namespace.
    worker_role = one(objs, "Role", "k8s-runbooks-worker")
    assert worker_role["metadata"]["namespace"] == ns
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for r in worker_role["rules"])


def test_the_old_path_still_points_at_the_template() -> None:
    old = REPO / "deployments" / "kubernetes" / "base-job-template.json"
    assert old.is_symlink() and old.resolve() == TEMPLATE.resolve()
    assert Path(old).read_text() == TEMPLATE.read_text()
