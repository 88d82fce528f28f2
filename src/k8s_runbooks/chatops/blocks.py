"""Block Kit messages of an approval: the diagnosis and its evidence, the ranked plan with each action's blast
radius, a button per action plus Reject; and the same message closed with its outcome (chat.update).

Button values are compact JSON `{"r": flow run id, "n": approval nonce, "a": action id or null, "p": pods}`;
the receiver trusts them only inside a request whose Slack signature it verified, and re-checks them against
the run in Prefect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SECTION_MAX = 2900  # Slack refuses section text over 3000 characters
MAX_FINDINGS = 10
STATUS_BLOCK = "k8s-runbooks-status"
ACTIONS_PREFIX = "k8s-runbooks-act"


def esc(text: str) -> str:
    """Slack mrkdwn escaping: &, < and > are control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int = SECTION_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class PlannedAction:
    id: str
    describe: str
    score: float
    guard: str
    reason: str
    pods: int
    two_person: bool = False


@dataclass(frozen=True)
class ApprovalRequest:
    run_id: str
    nonce: str
    flow: str
    target: str
    impact: str
    findings: list[str]
    actions: list[PlannedAction]
    expires_at: datetime
    run_url: str | None = None
    drill: bool = False
    approvers: str = ""
    notes: list[str] = field(default_factory=list)

    def value(self, action: str | None, pods: int = 0) -> str:
        return json.dumps({"r": self.run_id, "n": self.nonce, "a": action, "p": pods}, separators=(",", ":"))

    def headline(self) -> str:
        drill = " [DRILL]" if self.drill else ""
        return f"Approval needed{drill}: {self.flow} on {self.target}"


def _section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text)}, **extra}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": text[:75], "emoji": True},
                              "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def approval_blocks(req: ApprovalRequest) -> list[dict[str, Any]]:
    """The open approval message."""
    findings = [f"• {esc(f)}" for f in req.findings[:MAX_FINDINGS]] or ["• no findings"]
    if len(req.findings) > MAX_FINDINGS:
        findings.append(f"• … {len(req.findings) - MAX_FINDINGS} more in the run")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": req.headline()[:150], "emoji": True}},
        _section(f"*Impact*: {esc(req.impact or 'unknown')}\n*Diagnosis and evidence*:\n" + "\n".join(findings)),
        {"type": "divider"},
        _section("*Planned actions* (most supported by the evidence first)"),
    ]
    for i, a in enumerate(req.actions):
        two = " · *two approvers needed*" if a.two_person else ""
        text = (f"*{i + 1}. `{esc(a.id)}`* — {esc(a.describe)}\nevidence {a.score:.1f} · blast radius {a.pods} pod(s) · "
                f"guard: {esc(a.guard)}{two}\n_{esc(a.reason)}_")
        style = "primary" if i == 0 else None
        blocks.append(_section(text, block_id=f"{ACTIONS_PREFIX}-{i}",
                               accessory=_button(f"Approve {a.id}", f"approve:{a.id}", req.value(a.id, a.pods), style)))
    elements = [_button("Reject", "reject", req.value(None), "danger")]
    if req.run_url:
        elements.append({"type": "button", "text": {"type": "plain_text", "text": "Open run in Prefect"},
                         "action_id": "open-run", "url": req.run_url[:3000]})
    blocks.append({"type": "actions", "block_id": f"{ACTIONS_PREFIX}-buttons", "elements": elements})
    context = [f"Expires {req.expires_at:%Y-%m-%d %H:%M:%S} UTC", f"run `{req.run_id}`"]
    if req.approvers:
        context.append(f"approvers: {esc(req.approvers)}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(context), 2000)}]})
    for note in req.notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(esc(note), 2000)}]})
    return blocks


def _status(line: str) -> dict[str, Any]:
    return {"type": "section", "block_id": STATUS_BLOCK, "text": {"type": "mrkdwn", "text": _cut(line)}}


def with_status(blocks: list[dict[str, Any]], line: str, *, close: bool) -> list[dict[str, Any]]:
    """The message's blocks with `line` as its status; `close` removes every button (the approval is over)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict) or block.get("block_id") == STATUS_BLOCK:
            continue
        if close and str(block.get("block_id", "")).startswith(ACTIONS_PREFIX):
            if block.get("type") == "actions":
                continue
            block = {k: v for k, v in block.items() if k != "accessory"}
        out.append(block)
    out.append(_status(line))
    return out[:50]  # Block Kit allows 50 blocks per message
