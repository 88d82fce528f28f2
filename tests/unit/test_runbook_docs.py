"""Parsing of Markdown runbooks and their automation bindings."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.runbook_docs import load_runbook, parse_runbook, runbooks_dir

GOOD = """# Disk Full

- **Objective**: Free space before writes fail.
- **Tools**: kubectl, Prometheus

<!-- automation: flow=disk-full -->

### 1. Identify
<!-- automation: step=identify tasks=find_volumes,disk_usage -->

- List pods:
  ```bash
  kubectl get pods -n <namespace>
  ```

### 2. Clean up
<!-- automation: step=clean-up tasks=delete_files -->

Delete old files.
"""


def test_parses_title_objective_tools_and_steps() -> None:
    rb = parse_runbook(GOOD, "disk-full.md")
    assert rb.title == "Disk Full"
    assert rb.objective == "Free space before writes fail."
    assert rb.tools == ["kubectl", "Prometheus"]
    assert rb.flow == "disk-full"
    assert rb.step_ids == ["identify", "clean-up"]
    assert rb.steps[0].title == "Identify" and rb.steps[1].number == 2
    assert rb.steps[0].commands == ["kubectl get pods -n <namespace>"]
    assert rb.bindings == {"identify": ["find_volumes", "disk_usage"], "clean-up": ["delete_files"]}


def test_step_body_keeps_the_text_but_not_the_binding_comment() -> None:
    rb = parse_runbook(GOOD)
    assert "kubectl get pods" in rb.steps[0].body
    assert "automation:" not in rb.steps[0].body
    assert rb.steps[1].body == "Delete old files."


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (GOOD.replace("# Disk Full\n", ""), "no title"),
        (GOOD.replace("<!-- automation: step=clean-up tasks=delete_files -->\n", ""), "step 2 'Clean up' has no automation binding"),
        (GOOD.replace("step=clean-up", "step=identify"), "duplicate step id 'identify'"),
        (GOOD.replace("step=clean-up", "step=Clean_Up"), "must be lowercase"),
        (GOOD.replace("step=clean-up tasks", "stp=clean-up tasks"), "unknown automation binding key 'stp'"),
        (GOOD.replace("tasks=delete_files", "tasks"), "malformed automation binding item 'tasks'"),
        (GOOD.replace("### 2. Clean up", "### 3. Clean up"), "numbered 1, 2, 3"),
        (GOOD.replace("<!-- automation: step=clean-up tasks=delete_files -->", "<!-- automation: tasks=delete_files -->"), "no step=<id>"),
        ("# Only a title\n\nNo steps here.\n", "no numbered steps"),
    ],
)
def test_broken_runbooks_fail_with_a_clear_message(broken: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_runbook(broken, "broken.md")


def test_two_bindings_in_one_step_are_rejected() -> None:
    text = GOOD.replace("Delete old files.", "<!-- automation: step=again -->\n\nDelete old files.")
    with pytest.raises(InvalidInput, match="more than one automation binding"):
        parse_runbook(text)


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_runbook(tmp_path / "nope.md")


def test_pod_crash_runbook_follows_the_incident_response_plan() -> None:
    rb = load_runbook(runbooks_dir() / "pod-crash.md")
    assert rb.flow == "pod-crash"
    assert rb.step_ids == ["identify", "contain", "recover", "verify", "communicate"]
    commands = " ".join(c for s in rb.steps for c in s.commands)
    for expected in ("kubectl get pods,deploy,rs", "kubectl describe pod", "--previous", "kubectl get events", "kubectl rollout undo",
                     "kubectl scale", "k8s-runbooks diagnose"):
        assert expected in commands
    assert "kubectl" in rb.tools and "Prometheus" in rb.tools
