"""The run's side of ChatOps: the approval message in Slack, verified approvers, the escalation chain and the
page, the outcome at the run's end. flows/common.py calls three functions: `request_approval` (instead of
the bare Prefect pause), `send_elsewhere` (email) and `finish`.

Nothing here may block or fail a run: Slack and PagerDuty are called from background threads or with short,
bounded timeouts, every failure is logged and noted on the timeline, and the approval stays open in the
Prefect UI whatever Slack does. Without Slack settings or a matching policy the run behaves as before.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from prefect import get_client, get_run_logger
from prefect.runtime import flow_run as runtime_flow_run

from flows import approval
from flows.approval import ApprovalOutcome
from k8s_runbooks.chatops import attest
from k8s_runbooks.chatops.audit import ApprovalEvent, append_event
from k8s_runbooks.chatops.blocks import ApprovalRequest, PlannedAction, approval_blocks, esc, with_status
from k8s_runbooks.chatops.desk import PRESS_KEY_PREFIX
from k8s_runbooks.chatops.email import send_email
from k8s_runbooks.chatops.pagerduty import PagerDuty, severity_from_alert
from k8s_runbooks.chatops.policy import Level, Policy, load_policies, pods_touched
from k8s_runbooks.chatops.settings import ChatOpsSettings, get_chatops_settings
from k8s_runbooks.chatops.slack import SlackClient
from k8s_runbooks.communicate import AUDIENCES, StatusUpdate, render_safely
from k8s_runbooks.errors import RunbookError
from k8s_runbooks.models import Action, Decision, utcnow
from k8s_runbooks.settings import get_settings
from tasks.pods import workload_status
from tasks.remediation import plan_is_allowed

FINISH_BUDGET_S = 15.0  # the most the run's end waits for Slack and PagerDuty
RESOLVED_OUTCOMES = ("resolved", "mitigated")


@dataclass
class Session:
    """One run's approval conversation (module state: a flow run lives in one process)."""

    run_id: str
    settings: ChatOpsSettings
    policy: Policy | None
    slack: SlackClient | None
    channel: str | None
    request: ApprovalRequest | None = None
    ts: str | None = None
    pages: dict[str, str] = field(default_factory=dict)  # routing key name -> dedup key
    notified: set[int] = field(default_factory=set)  # escalation levels done
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SESSIONS: dict[str, Session] = {}
_SERVER_AUTH: dict[str, bool] = {}


def _tags() -> list[str]:
    try:
        return list(runtime_flow_run.tags or [])
    except Exception:  # noqa: BLE001 - outside a deployment run there may be none
        return []


def _tag(prefix: str) -> str | None:
    return next((t.split(":", 1)[1] for t in _tags() if t.startswith(prefix + ":")), None)


def _event(ctx: Any, event: str, actor: str = "", detail: str = "", kind: str = "approval", note: str | None = None,
           timeline: bool = True) -> None:
    """One approval step in the approval audit and (unless seek_approval notes it itself) on the timeline."""
    try:
        append_event(get_settings().state_dir, ApprovalEvent(flow_run_id=ctx.flow_run_id, event=event, actor=actor, detail=detail))
    except OSError as exc:
        get_run_logger().error("approval audit not written: %s", exc)
    if timeline:
        ctx.note(note or f"{event}: {actor}".rstrip(": "), detail, kind)


def _session(ctx: Any) -> Session:
    s = _SESSIONS.get(ctx.flow_run_id)
    if s is not None:
        return s
    settings = get_chatops_settings()
    policy = None
    try:
        policy = load_policies(settings.chatops_config).for_run(_tag("alert-route"), ctx.params.namespace)
    except RunbookError as exc:  # a broken policy file must not stop the incident response: UI approvals stay
        get_run_logger().error("approval policies not loaded: %s", exc)
        ctx.note("Approval policies could not be loaded; approvals only in the Prefect UI", str(exc), "note")
    slack = None
    if settings.slack_bot_token is not None:
        slack = SlackClient(settings.slack_bot_token, settings.slack_api_url, settings.slack_timeout_seconds,
                            attempts=2, budget_seconds=10)
    channel = (policy.channel if policy else None) or settings.slack_channel
    s = _SESSIONS[ctx.flow_run_id] = Session(ctx.flow_run_id, settings, policy, slack, channel)
    return s


def _background(s: Session, fn: Any, *args: Any) -> None:
    t = threading.Thread(target=fn, args=args, daemon=True, name="chatops")
    s.threads.append(t)
    t.start()


# ------------------------------------------------------------------------------------ approval
def request_approval(ctx: Any, plan_md: str, usable: list[Action], checks: dict[str, str]) -> ApprovalOutcome:
    """Pause for approval like flows.approval.request_approval, and around it: the Slack message, the escalation
    chain while nobody answers, verification of the approver, the two-person rule and the re-check."""
    log = get_run_logger()
    s = _session(ctx)
    p = ctx.params
    before = workload_status(p.namespace, p.deployment)
    pods = {a.kind.value: pods_touched(a.kind.value, list(a.pods), a.replicas, before.replicas) for a in usable}
    two = {k for k, n in pods.items() if s.policy is not None and s.policy.needs_two(n)}
    levels = s.policy.escalation if s.policy else []
    total = p.approval_timeout_seconds + sum(level.wait_seconds for level in levels)
    nonce = secrets.token_hex(6)
    # The pause key carries the nonce of the Slack buttons, so the receiver can tell that a press answers this very
    # pause; without a Slack message the key stays Prefect's default (the pause counter: paused-1-*).
    pause_key: str | None = None
    expires = utcnow() + timedelta(seconds=total)
    ids = [a.kind.value for a in usable]
    if s.policy is not None and s.slack is not None and s.channel:
        s.request = ApprovalRequest(
            run_id=ctx.flow_run_id, nonce=nonce, flow=ctx.flow, target=str(ctx.target), impact=ctx.record.impact,
            findings=[f.title for f in ctx.record.findings], expires_at=expires, run_url=ctx.run_url, drill=p.drill,
            actions=[PlannedAction(a.kind.value, a.describe(), a.evidence_score, checks.get(a.kind.value, ""), a.reason,
                                   pods[a.kind.value], a.kind.value in two) for a in usable],
            approvers=", ".join(s.policy.approvers.users + s.policy.approvers.groups))
        pause_key = f"{nonce}-1"
        _background(s, _post_request, ctx, s, log)
    elif s.policy is None:
        ctx.note("No approval policy for this run: approvals only in the Prefect UI", f"namespace {p.namespace}", "note")
    stop = threading.Event()
    if levels:
        _background(s, _escalation_timer, ctx, s, levels, p.approval_timeout_seconds, stop, log)
    try:
        outcome = approval.request_approval(plan_md, ids, total, key=pause_key)
    except approval.ApprovalCancelled as exc:
        _background(s, _close_message, s, f":white_check_mark: {exc}", log)
        raise
    finally:
        stop.set()
    _copy_presses(ctx)
    if outcome.timed_out:
        for i, level in enumerate(levels):  # a level whose time fell on the deadline still gets its notice
            _background(s, _notify_level, ctx, s, i, level, log)
        _background(s, _close_message, s, f":sos: Nobody approved within {total} s: escalated, nothing was changed", log)
        return outcome
    if outcome.unanswered:
        _background(s, _close_message, s, ":warning: Resumed without an answer to the approval form: nothing was changed", log)
        return outcome
    outcome = _verify(ctx, s, outcome, pause_key, two)
    if outcome.void_reason:
        return outcome
    if not outcome.approved:
        _event(ctx, "rejected", outcome.approver, outcome.comment, timeline=False)
        for i, level in enumerate(levels):  # a person said no: on-call takes over (the channel, then the first page)
            _background(s, _notify_level, ctx, s, i, level, log)
            if level.notify == "page":
                break
        return outcome
    return _recheck(ctx, outcome, usable, before)


def _verify(ctx: Any, s: Session, outcome: ApprovalOutcome, pause_key: str | None, two: set[str]) -> ApprovalOutcome:
    """Name the approver as verified (a valid attestation of this very answer) or unverified (Prefect UI)."""
    got = attest.verify(s.settings.slack_signing_secret, outcome.attestation) if pause_key else None
    if got is not None and (got.run, got.pause, got.approve, got.action) == (ctx.flow_run_id, pause_key, outcome.approved,
                                                                          outcome.action if outcome.approved else None):
        approvers = {a.id: a for a in got.approvers}
        label = " + ".join(a.label() for a in approvers.values())
        _event(ctx, "answer", label, f"approve={outcome.approved} action={outcome.action}; verified by Slack signature",
               timeline=False)
        if outcome.approved and outcome.action in two and len(approvers) < 2:
            return _void(ctx, outcome, label, f"{outcome.action} needs two distinct approvers")
        return dataclasses.replace(outcome, approver=label)
    if outcome.attestation:
        ctx.note("The answer carried an attestation that does not check out; treated as unverified", "", "approval")
    label = f"{outcome.approver} (Prefect UI, authenticated server)" if _server_requires_auth() \
        else f"{outcome.approver} — unverified (Prefect UI)"
    _event(ctx, "answer", label, f"approve={outcome.approved} action={outcome.action}", timeline=False)
    if outcome.approved and outcome.action in two:
        return _void(ctx, outcome, label, f"{outcome.action} needs two distinct verified approvers (Slack); "
                                          "the Prefect UI cannot tell two people apart")
    if s.request is not None:  # answered elsewhere: the Slack buttons must not look open
        what = f"approved `{outcome.action}`" if outcome.approved else "rejected"
        _background(s, _close_message, s, f"Answered in the Prefect UI: {esc(label)} {what}", get_run_logger())
    return dataclasses.replace(outcome, approver=label)


def _recheck(ctx: Any, outcome: ApprovalOutcome, usable: list[Action], before: Any) -> ApprovalOutcome:
    """The guard is asked again before acting: an approval for an action it now refuses acts on nothing. (Whether
    the diagnosis still holds is the runbook's own re-check of the evidence, flows/diagnosis.recheck: a
    workload that changed meanwhile is judged by what its evidence says now, not by the change alone.)"""
    p = ctx.params
    chosen = next(a for a in usable if a.kind.value == outcome.action)
    audit = plan_is_allowed(chosen, p.approval, "plan", ctx.flow_run_id)
    if audit.decision is Decision.refused:
        return _void(ctx, outcome, outcome.approver, f"the guard now refuses {chosen.kind.value}: {audit.reason}")
    return outcome


def _void(ctx: Any, outcome: ApprovalOutcome, who: str, why: str) -> ApprovalOutcome:
    _event(ctx, "void", who, why, kind="escalation", note=f"Approval by {who} acts on nothing")
    s = _SESSIONS.get(ctx.flow_run_id)
    if s is not None:
        _background(s, _close_message, s, f":warning: The approval acts on nothing: {esc(why)}", get_run_logger())
    return dataclasses.replace(outcome, approver=who, void_reason=why)


def _copy_presses(ctx: Any) -> None:
    """Presses the receiver recorded on the run (refused ones included) go to the audit and the timeline."""
    try:
        with get_client(sync_client=True) as client:
            inputs = client.filter_flow_run_input(ctx.flow_run_id, key_prefix=PRESS_KEY_PREFIX, limit=100, exclude_keys=set())
    except Exception as exc:  # noqa: BLE001 - the receiver's log keeps them too
        get_run_logger().warning("could not read the Slack presses recorded on this run: %s", exc)
        return
    for item in sorted(inputs, key=lambda i: str(i.created)):
        try:
            v = json.loads(item.value)
        except ValueError:
            continue
        who = f"{v.get('name') or ''} (Slack {v.get('user')})".strip()
        what = v.get("action") or "reject"
        _event(ctx, f"press-{v.get('outcome')}", who, f"{what}: {v.get('detail', '')}",
               note=f"Slack press by {who} on {what}: {v.get('outcome')}")


def _server_requires_auth() -> bool:
    """The Prefect server refuses unauthenticated API calls (PREFECT_SERVER_API_AUTH_STRING is set on it)."""
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value() or "")
    if url not in _SERVER_AUTH:
        try:
            _SERVER_AUTH[url] = httpx.get(f"{url}/admin/version", timeout=5).status_code == 401
        except httpx.HTTPError:
            _SERVER_AUTH[url] = False
    return _SERVER_AUTH[url]


# ------------------------------------------------------------------------------------ Slack and escalation
def _post_request(ctx: Any, s: Session, log: Any) -> None:
    assert s.request is not None and s.slack is not None and s.channel
    try:
        answer = s.slack.post_message(s.channel, s.request.headline(), approval_blocks(s.request))
    except RunbookError as exc:
        log.warning("Slack approval message not posted (%s); the approval stays open in the Prefect UI", exc)
        _event(ctx, "slack-failed", "", str(exc), kind="communication",
               note="Slack approval message could not be posted; approve in the Prefect UI")
        return
    with s.lock:
        s.ts = str(answer.get("ts") or "") or None
        s.channel = str(answer.get("channel") or s.channel)
    _event(ctx, "posted", "", f"channel {s.channel}, message {s.ts}", kind="communication",
           note=f"Approval requested in Slack ({s.channel})")


def _escalation_timer(ctx: Any, s: Session, levels: list[Level], first_after: int, stop: threading.Event, log: Any) -> None:
    at = float(first_after)
    started = time.monotonic()
    for i, level in enumerate(levels):
        if stop.wait(max(0.0, started + at - time.monotonic())):
            return
        _notify_level(ctx, s, i, level, log)
        at += level.wait_seconds


def _update(ctx: Any, kind: str, summary: str) -> StatusUpdate:
    rec = ctx.record
    return StatusUpdate(kind=kind, target=str(ctx.target), summary=summary, impact=rec.impact, run_url=ctx.run_url,
                        findings=[f.title for f in rec.findings][:10], drill=rec.drill, runbook=ctx.flow,
                        actions=[r.action.describe() for r in rec.actions])


def _notify_level(ctx: Any, s: Session, i: int, level: Level, log: Any) -> None:
    with s.lock:
        if i in s.notified:
            return
        s.notified.add(i)
    if level.notify == "channel":
        channel = level.channel or s.channel
        if s.slack is None or not channel:
            ctx.note(f"Escalation level {i + 1} skipped: no Slack bot token or channel", "", "escalation")
            return
        text = render_safely("responders", "slack", _update(ctx, "escalated", "no approval yet: on-call, please look"),
                             s.settings.templates_dir).text
        try:
            s.slack.post_message(channel, text)
        except RunbookError as exc:
            log.warning("escalation message not posted: %s", exc)
            _event(ctx, "escalation-failed", "", f"level {i + 1} (channel {channel}): {exc}", kind="escalation")
            return
        _event(ctx, "escalated", "", f"level {i + 1}: message in {channel}", kind="escalation",
               note=f"Escalated (level {i + 1}): message in Slack channel {channel}")
        return
    key = s.settings.pagerduty_routing_key if level.routing_key == "primary" else s.settings.pagerduty_secondary_routing_key
    if key is None:
        ctx.note(f"Escalation level {i + 1} skipped: no PagerDuty routing key for {level.routing_key}", "", "escalation")
        return
    dedup = f"k8s-runbooks/{_root_run_id(ctx)}"
    severity = severity_from_alert(_tag("alert-severity"))
    pd = PagerDuty(s.settings.pagerduty_events_url, s.settings.slack_timeout_seconds)
    try:
        pd.trigger(key, dedup, f"{ctx.flow} on {ctx.target}: approval pending, nothing changed yet", str(ctx.target), severity,
                   component=ctx.params.deployment, group=ctx.params.namespace,
                   details={"flow_run_id": ctx.flow_run_id, "impact": ctx.record.impact},
                   links=[{"href": ctx.run_url, "text": "Prefect run"}] if ctx.run_url else None)
    except RunbookError as exc:
        log.warning("page not sent: %s", exc)
        _event(ctx, "page-failed", "", f"level {i + 1} ({level.routing_key}): {exc}", kind="escalation")
        return
    with s.lock:
        s.pages[level.routing_key] = dedup
    _event(ctx, "paged", level.routing_key, f"level {i + 1}: PagerDuty dedup_key {dedup}, severity {severity}",
           kind="escalation", note=f"Escalated (level {i + 1}): paged {level.routing_key} on-call")


def _root_run_id(ctx: Any) -> str:
    try:
        return str(runtime_flow_run.root_flow_run_id or ctx.flow_run_id)
    except Exception:  # noqa: BLE001 - the run's own id is a fine incident key
        return ctx.flow_run_id


def _close_message(s: Session, line: str, log: Any) -> None:
    """The approval message without its buttons, with `line` (after the post, which may still be on its way)."""
    for t in list(s.threads):
        if t is not threading.current_thread() and t.is_alive():
            t.join(timeout=s.settings.slack_timeout_seconds * 2)
    if s.slack is None or not s.ts or not s.channel or s.request is None:
        return
    try:
        s.slack.update_message(s.channel, s.ts, line, with_status(approval_blocks(s.request), line, close=True))
    except RunbookError as exc:
        log.warning("chat.update of the approval message failed: %s", exc)


# ------------------------------------------------------------------------------------ the run's end
def send_elsewhere(ctx: Any, update: StatusUpdate) -> None:
    """Email the update to each audience with recipients (stakeholders, status page); failures are noted."""
    settings = get_chatops_settings()
    for audience in AUDIENCES:
        to = settings.email_recipients.get(audience) or []
        if not to or not settings.smtp_host:
            continue
        try:
            rendered = render_safely(audience, "email", update, settings.templates_dir)
            send_email(settings, to, rendered.subject, rendered.text, timeout=settings.slack_timeout_seconds * 2)
        except RunbookError as exc:
            ctx.note(f"Email to {audience} could not be sent", str(exc), "communication")
            continue
        ctx.note(f"Email update ({update.kind}) sent to {audience}", ", ".join(to), "communication")


def finish(ctx: Any) -> None:
    """The run's end: the approval message shows the outcome, responders get the update in its thread, and a
    page resolves when the run resolved the incident (otherwise it stays open for on-call)."""
    s = _SESSIONS.pop(ctx.flow_run_id, None)
    if s is None:
        return
    log = get_run_logger()
    deadline = time.monotonic() + FINISH_BUDGET_S
    for t in list(s.threads):  # notifications still under way get a bounded wait, never an unbounded one
        if t.is_alive():
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in s.threads):
        ctx.note("Slack or PagerDuty still busy at the run's end; their last updates may be missing", "", "communication")
    rec = ctx.record
    if s.slack is not None:  # one attempt each from here on: the run is over and must not linger on Slack
        s.slack = SlackClient(s.settings.slack_bot_token or "", s.settings.slack_api_url, s.settings.slack_timeout_seconds,
                              attempts=1)
    line = f"*Run finished: {esc(rec.outcome)}*" + (f" — {esc(rec.outcome_detail)}" if rec.outcome_detail else "")
    if s.ts and s.channel and s.slack is not None and s.request is not None:
        kind = "resolved" if rec.outcome == "resolved" else "mitigated" if rec.outcome == "mitigated" else "escalated"
        text = render_safely("responders", "slack", _update(ctx, kind, line), s.settings.templates_dir).text
        try:
            s.slack.update_message(s.channel, s.ts, line, with_status(approval_blocks(s.request), line, close=True))
            s.slack.call("chat.postMessage", {"channel": s.channel, "thread_ts": s.ts, "text": text})
            _event(ctx, "slack-updated", "", f"outcome {rec.outcome}", kind="communication",
                   note="Slack approval message updated with the outcome")
        except RunbookError as exc:
            log.warning("Slack outcome update failed: %s", exc)
            ctx.note("Slack outcome update failed", str(exc), "communication")
    for name, dedup in s.pages.items():
        if rec.outcome not in RESOLVED_OUTCOMES:
            _event(ctx, "page-open", name, f"dedup_key {dedup}: the run ended {rec.outcome}", kind="escalation",
                   note=f"Page to {name} left open: the run ended {rec.outcome}")
            continue
        key = s.settings.pagerduty_routing_key if name == "primary" else s.settings.pagerduty_secondary_routing_key
        try:
            assert key is not None
            PagerDuty(s.settings.pagerduty_events_url, s.settings.slack_timeout_seconds, attempts=2).resolve(key, dedup)
        except RunbookError as exc:
            log.warning("page not resolved: %s", exc)
            ctx.note(f"Page to {name} could not be resolved", str(exc), "escalation")
            continue
        _event(ctx, "page_resolved", name, f"dedup_key {dedup}", kind="escalation", note=f"Page to {name} resolved with the run")
