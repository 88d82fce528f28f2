"""The local Slack + PagerDuty as a sandbox component, and what the runner and the receiver need to use it.

`sandbox up` starts it before Prefect; the runner (which runs the runbooks: it posts, escalates, pages) and the
receiver (which verifies button presses and resumes runs) get `chat_env()`: the local URLs, the approval policy
rendered from config/chatops.yaml, and the secrets of D/secrets/chatops.env.
"""

from __future__ import annotations

import sys
from pathlib import Path

from k8s_runbooks.sandbox.launchers import CONFIG_DIR, Component, render
from k8s_runbooks.sandbox.localchat import workspace

NAME = "chatops"
MARKER = "k8s_runbooks.sandbox.localchat.server"
PAGE_WAIT_SECONDS = 240  # how long the approval stays open after the page, before the secondary is paged


def policy_path(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "config" / "chatops.yaml"


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def chatops_component(state_dir: Path, port: int) -> Component:
    """The component; also writes the secrets (once) and the approval policy, so it is ready to start."""
    state = Path(state_dir).resolve()
    workspace.ensure_secrets(state)
    render(CONFIG_DIR / "chatops.yaml", policy_path(state), channel=workspace.CHANNEL, page_wait=str(PAGE_WAIT_SECONDS))
    url = base_url(port)
    return Component(
        name=NAME, port=port, port_setting="K8S_RUNBOOKS_SANDBOX_CHATOPS_PORT", url=url, health_url=f"{url}/healthz",
        command=[sys.executable, "-m", MARKER, "--state-dir", str(state), "--port", str(port)],
        marker=MARKER, timeout_s=30,
    )


def bare_component(state_dir: Path, port: int) -> Component:
    """What status/down need (no files written)."""
    url = base_url(port)
    return Component(name=NAME, port=port, port_setting="K8S_RUNBOOKS_SANDBOX_CHATOPS_PORT", url=url,
                     health_url=f"{url}/healthz", command=[], marker=MARKER)


def chat_env(state_dir: Path, port: int) -> dict[str, str]:
    """Settings (K8S_RUNBOOKS_SLACK_*, _PAGERDUTY_*, _CHATOPS_CONFIG) of a process that uses the local Slack and
    PagerDuty; empty when the component is off or was never set up in this state dir."""
    state = Path(state_dir).resolve()
    if not port or not workspace.secrets_path(state).exists():
        return {}
    url = base_url(port)
    return {
        "K8S_RUNBOOKS_SLACK_API_URL": f"{url}/api",
        "K8S_RUNBOOKS_SLACK_CHANNEL": workspace.CHANNEL,
        "K8S_RUNBOOKS_PAGERDUTY_EVENTS_URL": f"{url}/v2/enqueue",
        "K8S_RUNBOOKS_CHATOPS_CONFIG": str(policy_path(state)),
        **workspace.read_secrets(state),
    }
