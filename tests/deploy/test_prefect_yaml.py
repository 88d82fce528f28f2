"""prefect.yaml (the users' way to register the deployments) agrees with k8s_runbooks_prefect.deploy.SPECS and
deploys non-interactively against a real Prefect server with its explicit pull step.

The real deploy uses a copy with suffixed deployment names, so the session sandbox's runner-served
deployments (same names) are left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient

from k8s_runbooks_prefect import deploy
from tests.conftest import REPO, Sandbox

SUFFIX = "-yamltest"


def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_matches_the_programmatic_specs() -> None:
    doc = prefect_yaml()
    assert doc["pull"] and "set_working_directory" in next(iter(doc["pull"][0]))
    by_name = {d["name"]: d for d in doc["deployments"]}
    assert set(by_name) == {s.name for s in deploy.SPECS}
    for spec in deploy.SPECS:
        entry = by_name[spec.name]
        assert entry["entrypoint"] == spec.entrypoint
        assert set(entry["tags"]) == set(spec.tags)
        assert entry["work_pool"]["name"] == deploy.LOCAL_WORK_POOL
        if spec.cron:
            assert [s["cron"] for s in entry["schedules"]] == [spec.cron]
            assert all(s["active"] is False for s in entry["schedules"]), "drill schedules are paused outside the sandbox"
            assert entry["parameters"] == spec.parameters


@pytest.mark.slow
@pytest.mark.integration
def test_prefect_deploy_all_registers_every_deployment(prefect_sandbox: Sandbox, client: SyncPrefectClient,
                                                       tmp_path: Path) -> None:
    doc = prefect_yaml()
    doc["deployments"] = [{**d, "name": d["name"] + SUFFIX} for d in doc["deployments"]
                          if (REPO / (d["entrypoint"].split(":")[0].replace(".", "/") + ".py")).exists()]
    copy = tmp_path / "prefect.yaml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**prefect_sandbox.env, "K8S_RUNBOOKS_CHECKOUT": str(REPO), "PREFECT_API_URL": prefect_sandbox.prefect_api_url}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "--no-prompt", "work-pool", "create", deploy.LOCAL_WORK_POOL, "--type", "process",
                    "--overwrite"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    done = subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(copy)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    flows = {s.name: s.flow_name for s in deploy.SPECS}
    for entry in doc["deployments"]:
        flow_name = flows[entry["name"].removesuffix(SUFFIX)]
        dep = client.read_deployment_by_name(f"{flow_name}/{entry['name']}")
        assert dep.work_pool_name == deploy.LOCAL_WORK_POOL
        # `{{ $K8S_RUNBOOKS_CHECKOUT }}` is resolved when deploying: the worker cds into that checkout.
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert dep.parameter_openapi_schema["required"] == ["params"]
        assert all(not s.active for s in dep.schedules)
