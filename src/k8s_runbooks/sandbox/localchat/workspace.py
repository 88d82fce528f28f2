"""The sandbox's Slack workspace and PagerDuty account: who is in it, its secrets (one env file, 0600), and where
the local server keeps what it received.

    D/secrets/chatops.env   K8S_RUNBOOKS_SLACK_BOT_TOKEN, _SLACK_SIGNING_SECRET, _PAGERDUTY_ROUTING_KEY,
                            _PAGERDUTY_SECONDARY_ROUTING_KEY: generated once per state dir, given to the runner
                            and the receiver as environment (never on a command line, never in a log)
    D/localchat/state.json  channels, messages (blocks, buttons, updates), ephemeral answers, pages
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox.binaries import SandboxError

CHANNEL = "C0INCIDENTS"
CHANNELS = {CHANNEL: "incidents"}
USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0MALLORY": "mallory"}
GROUPS = {"S0ONCALL": ["U0BOB"]}  # the on-call user group: bob (members read with usergroups.users.list)
SECRETS_FILE = "secrets/chatops.env"
STATE_FILE = "localchat/state.json"
BOT_TOKEN = "K8S_RUNBOOKS_SLACK_BOT_TOKEN"
SIGNING_SECRET = "K8S_RUNBOOKS_SLACK_SIGNING_SECRET"
PRIMARY_KEY = "K8S_RUNBOOKS_PAGERDUTY_ROUTING_KEY"
SECONDARY_KEY = "K8S_RUNBOOKS_PAGERDUTY_SECONDARY_ROUTING_KEY"


class WorkspaceError(SandboxError):
    """The sandbox's local Slack/PagerDuty is not set up (or its files are unreadable); the message says what to do."""


def secrets_path(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / SECRETS_FILE


def state_path(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / STATE_FILE


def ensure_secrets(state_dir: Path) -> dict[str, str]:
    """The workspace's secrets, generated the first time (kept afterwards: a restart must not void open approvals)."""
    path = secrets_path(state_dir)
    if path.exists():
        return read_secrets(state_dir)
    values = {
        BOT_TOKEN: "xoxb-sandbox-" + secrets.token_hex(24),
        SIGNING_SECRET: secrets.token_hex(32),
        PRIMARY_KEY: secrets.token_hex(16),  # PagerDuty integration keys are 32 characters
        SECONDARY_KEY: secrets.token_hex(16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Secrets of the sandbox's local Slack and PagerDuty (k8s-runbooks sandbox up); never commit or print.\n")
        out.writelines(f"{k}={v}\n" for k, v in values.items())
    return values


def read_secrets(state_dir: Path) -> dict[str, str]:
    path = secrets_path(state_dir)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise WorkspaceError(f"no local Slack in {Path(state_dir).resolve()} ({path} is missing); "
                             "start it with `k8s-runbooks sandbox up`") from None
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror or exc}") from None
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    missing = [k for k in (BOT_TOKEN, SIGNING_SECRET, PRIMARY_KEY, SECONDARY_KEY) if not values.get(k)]
    if missing:
        raise WorkspaceError(f"{path} lacks {', '.join(missing)}; remove it and run `k8s-runbooks sandbox up` again")
    return values


def routing_keys(values: dict[str, str]) -> dict[str, str]:
    """Routing key -> the PagerDuty service it belongs to."""
    return {values[PRIMARY_KEY]: "primary", values[SECONDARY_KEY]: "secondary"}


def read_state(state_dir: Path) -> dict[str, Any]:
    """What the local Slack and PagerDuty received so far (empty before their first request)."""
    path = state_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"slack": {"messages": [], "ephemerals": [], "channels": CHANNELS, "users": USERS}, "pagerduty": {"incidents": []}}
    except (OSError, ValueError) as exc:
        raise WorkspaceError(f"{path} is unreadable ({exc}); stop the sandbox, remove it and start again") from None
    return data


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file)."""
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
