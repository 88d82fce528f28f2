"""`make demo SCENARIO=slack`: the Slack walkthrough of the README, played on the sandbox. shop/checkout crashes; a
pod-crash run waits for approval and posts to the local Slack; forged, stale and non-allowlisted presses resume
nothing; nobody allowed answers in time, so on-call is paged; alice approves, the run rolls back and resolves, the
page resolves with it, and the audit names alice (Slack U0ALICE, verified)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from k8s_runbooks import submit
from k8s_runbooks.sandbox import supervisor
from k8s_runbooks.sandbox.binaries import SandboxError
from k8s_runbooks.sandbox.localchat import press as presses
from k8s_runbooks.sandbox.localchat import workspace
from k8s_runbooks_cli.sandbox_chat import _events, _out, console, incidents_cmd, show_press

NAMESPACE, DEPLOYMENT = "shop", "checkout"
APPROVAL_TIMEOUT_S = 20


def _silence(cfg: supervisor.SandboxConfig) -> str:
    """An Alertmanager silence of PodCrashLooping for shop/checkout: the sandbox's alert route would otherwise roll it
    back, auto-approved, before anyone pressed a button. It expires by itself (30 minutes)."""
    now = datetime.now(timezone.utc)
    matchers = [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in (("alertname", "PodCrashLooping"), ("namespace", NAMESPACE), ("deployment", DEPLOYMENT))]
    body = {"matchers": matchers, "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=30)).isoformat(),
            "createdBy": "k8s-runbooks demo", "comment": "Slack walkthrough: this run is approved by hand"}
    url = f"http://127.0.0.1:{cfg.ports.alertmanager}/api/v2/silences"
    try:
        resp = httpx.post(url, json=body, timeout=10)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise SandboxError(f"Alertmanager did not take the silence ({exc})", hint="k8s-runbooks sandbox status") from None
    return str(resp.json()["silenceID"])


def _wait(what: str, check: Any, timeout_s: float, show_slack: tuple[supervisor.SandboxConfig, set[str]] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if show_slack is not None:
            _flush(*show_slack)
        found = check()
        if found:
            return found
        time.sleep(1.0)
    raise SandboxError(f"{what} did not happen within {timeout_s:.0f}s", hint="see .sandbox/logs/runner.log and receiver.log")


def _flush(cfg: supervisor.SandboxConfig, shown: set[str]) -> None:
    """Print what arrived in the local Slack since the last call."""
    for _, key, text in _events(workspace.read_state(cfg.state_dir), None, False):
        if key not in shown:
            _out(text)
            shown.add(key)


def _crash_looping(cfg: supervisor.SandboxConfig) -> bool:
    from kubernetes import client

    from k8s_runbooks.sandbox.demo_workload import api_client

    pods = client.CoreV1Api(api_client(cfg.kubeconfig)).list_namespaced_pod(NAMESPACE, label_selector=f"app={DEPLOYMENT}").items
    return any(cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff"
               for p in pods for cs in (p.status.container_statuses or []))


def _press(cfg: supervisor.SandboxConfig, shown: set[str], command: str, user: str | None, tamper: str | None = None) -> None:
    _flush(cfg, shown)
    console.print(f"$ k8s-runbooks sandbox slack press {command}", highlight=False, markup=False)
    result = presses.press(cfg.state_dir, f"http://127.0.0.1:{cfg.ports.receiver}", user, "approve", None, tamper)  # type: ignore[arg-type]
    if not show_press(result, tamper):
        raise SandboxError("the receiver's answer was not the expected one (see above)")
    shown.update(key for _, key, _ in _events(workspace.read_state(cfg.state_dir), None, False))  # show_press showed them


def demo_slack(cfg: supervisor.SandboxConfig) -> None:
    """Play the walkthrough (the sandbox is up, shop/checkout healthy)."""
    if not cfg.ports.chatops:
        raise SandboxError("this sandbox has no local Slack (component chatops)", hint="k8s-runbooks sandbox down && make demo SCENARIO=slack")
    console.rule("2. silence the auto-approved alert path for shop/checkout: this run waits for a person")
    silence = _silence(cfg)
    console.print(f"Alertmanager silence {silence} (PodCrashLooping, shop/checkout, 30 minutes)")
    console.rule("3. crash shop/checkout")
    supervisor.fault(cfg, "crash", NAMESPACE, DEPLOYMENT, "2", "demo: payment gateway client panicked")
    _wait("CrashLoopBackOff of shop/checkout", lambda: _crash_looping(cfg), 180)
    console.print("shop/checkout pods in CrashLoopBackOff")
    console.rule(f"4. k8s-runbooks run pod-crash -n shop -d checkout --approval required --approval-timeout {APPROVAL_TIMEOUT_S} --submit")
    rest = submit.PrefectRest(f"http://127.0.0.1:{cfg.ports.prefect}/api")
    shown: set[str] = {key for _, key, _ in _events(workspace.read_state(cfg.state_dir), None, False)}
    try:
        params = {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "approval": "required",
                  "approval_timeout_seconds": APPROVAL_TIMEOUT_S, "notes": "make demo SCENARIO=slack"}
        run = rest.create_run("pod-crash/pod-crash", {"params": params}, ["k8s-runbooks", "demo"])
        console.print(f"flow run {run.name} ({run.id}): http://127.0.0.1:{cfg.ports.prefect}/runs/flow-run/{run.id}")
        console.rule("5. k8s-runbooks sandbox slack messages")

        def approval_posted() -> bool:
            return any(run.id in json.dumps(m.posted_blocks or m.blocks) for m in presses.messages(workspace.read_state(cfg.state_dir)))

        _wait("the approval message in the local Slack", approval_posted, 240, (cfg, shown))
        console.rule("6. presses that must resume nothing")
        _press(cfg, shown, "--user U0ALICE --action approve --forge", "U0ALICE", "forge")
        _press(cfg, shown, "--user U0ALICE --action approve --stale", "U0ALICE", "stale")
        _press(cfg, shown, "--user U0MALLORY --action approve", "U0MALLORY")
        console.rule(f"7. nobody allowed answered within {APPROVAL_TIMEOUT_S} s: the escalation chain")
        dedup = f"k8s-runbooks/{run.id}"
        _wait("the page", lambda: any(i["dedup_key"] == dedup for i in workspace.read_state(cfg.state_dir)["pagerduty"]["incidents"]),
              APPROVAL_TIMEOUT_S + 120, (cfg, shown))
        incidents_cmd(state_dir=cfg.state_dir)
        console.rule("8. alice approves; a replay of her press is refused")
        _press(cfg, shown, "--user U0ALICE --action approve", "U0ALICE")
        _press(cfg, shown, "--replay", None, "replay")
        console.rule("9. the run acts and resolves; the page resolves with it")
        final = submit.follow(rest, run.id, on_state=lambda v: console.print(f"run: {v.state_name}"), on_log=lambda _: None)
        console.print(f"[bold]{final.state_name}[/]: {final.message}", highlight=False)
        _wait("the page resolved", lambda: any(i["dedup_key"] == dedup and i["status"] == "resolved"
                                               for i in workspace.read_state(cfg.state_dir)["pagerduty"]["incidents"]), 60, (cfg, shown))
        incidents_cmd(state_dir=cfg.state_dir)
    finally:
        rest.close()
        try:
            httpx.delete(f"http://127.0.0.1:{cfg.ports.alertmanager}/api/v2/silence/{silence}", timeout=10)
        except httpx.HTTPError:
            pass  # it expires by itself
    audit = cfg.state_dir / "runbooks" / "audit.jsonl"
    actors = [r["actor"] for r in map(json.loads, audit.read_text().splitlines())
              if r.get("flow_run_id") == run.id and r.get("decision") == "allowed" and r.get("outcome")] if audit.exists() else []
    console.print(f"audit ({audit}): acted as {', '.join(actors) or 'nobody'}", highlight=False)
