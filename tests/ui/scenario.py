"""The browser scenario against the Prefect UI (V2) in Debian's chromium, shared by tests/ui and
bench/ui_reliability.py:

1. the deployments page lists the runbook deployments;
2. a custom run of pod-crash filled in through the typed form (namespace, deployment, approval) is
   submitted, starts on the runner and completes;
3. a run paused for the runbooks' approval form is resumed through the UI's "Resume Flow Run" dialog.

Every click happens once: an HTTP 5xx seen by the browser, or a step that does not complete, fails the
scenario (no retried clicks). The analytics host the UI calls is blocked (no internet here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
REPO = Path(__file__).resolve().parents[2]
# How long a step may wait for the UI's own signal (an element, a response). A user on a slow machine
# waits for the page; they do not click again. 30 s was too short at load ~15 on 2 cores.
UI_TIMEOUT_MS = 90_000


class ScenarioFailed(AssertionError):
    pass


@dataclass
class Result:
    custom_run_id: str = ""
    approval_run_id: str = ""
    approval_answer: dict[str, object] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    step: str = ""  # the step running (named in a failure)
    step_seconds: dict[str, float] = field(default_factory=dict)  # how long each step waited for the UI/server
    _step_started: float = 0.0

    def begin(self, step: str) -> None:
        now = time.monotonic()
        if self.step:
            self.step_seconds[self.step] = round(now - self._step_started, 1)
        self.step, self._step_started = step, now


@contextmanager
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _api(api_url: str, method: str, path: str, **kwargs: object) -> object:
    resp = httpx.request(method, f"{api_url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]
    resp.raise_for_status()
    return resp.json() if resp.content else None


def _wait_state(api_url: str, run_id: str, states: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    run: dict = {}
    while time.monotonic() < deadline:
        try:
            run = _api(api_url, "GET", f"/flow_runs/{run_id}")  # type: ignore[assignment]
        except httpx.HTTPError:
            run = {}
        if run.get("state_type") in states:
            return run
        if run.get("state_type") in {"FAILED", "CRASHED", "CANCELLED"}:
            raise ScenarioFailed(f"run {run_id} ended {run.get('state_type')}: {run.get('state', {}).get('message')}")
        time.sleep(0.5)
    raise ScenarioFailed(f"run {run_id} not in {states} after {timeout_s:.0f}s (last: {run.get('state_type')})")


def _new_page(b: Browser, result: Result) -> Page:
    context = b.new_context()
    # Only the local server: the V2 UI calls an analytics host at start even with analytics off.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("http://127.0.0.1", "http://localhost"))
                  else route.abort())

    def on_response(resp: Response) -> None:
        if resp.status >= 500:
            result.server_errors.append(f"{resp.status} {resp.request.method} {resp.url}")

    context.on("response", on_response)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def run_scenario(b: Browser, ui_url: str, api_url: str, namespace: str, deployment: str,
                 runbooks: list[str], probe_env: dict[str, str], shots: Path | None = None) -> Result:
    """One round; on failure a screenshot of the page goes to `shots` (when given) and its path into the error."""
    result = Result()
    t0 = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    # The approval probe starts first (its process takes seconds to import Prefect) and pauses meanwhile.
    probe = subprocess.Popen([sys.executable, "-m", "tests.ui.approval_probe", tag], cwd=REPO, env=probe_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page = _new_page(b, result)
    try:
        # 1. the deployments page lists every runbook deployment
        result.begin("deployments list")
        # One page holds them all: the UI pages by 10 and there are more runbook deployments than that.
        page.goto(f"{ui_url}/v2/deployments?page=1&sort=NAME_ASC&limit=50")
        for name in runbooks:
            page.get_by_role("link", name=name, exact=True).first.wait_for()

        # 2. custom run through the typed form
        result.begin("custom run form")
        dep = _api(api_url, "GET", "/deployments/name/pod-crash/pod-crash")
        page.goto(f"{ui_url}/v2/deployments/deployment/{dep['id']}")  # type: ignore[index]
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Custom run").click()
        page.get_by_role("textbox", name="Namespace").fill(namespace)
        page.get_by_role("textbox", name="Deployment").fill(deployment)
        page.get_by_role("button", name="Select Approval").click()
        page.get_by_role("option", name="dry-run").click()
        page.get_by_role("spinbutton", name="Verify Timeout Seconds (Optional)").fill("0")
        page.get_by_role("textbox", name="Notes (Optional)").fill(f"UI scenario {tag}")
        result.begin("custom run submit")
        with page.expect_response(lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST") as created:
            page.get_by_role("button", name="Submit").click()
        if created.value.status != 201:
            raise ScenarioFailed(f"create_flow_run answered {created.value.status}: {created.value.text()[:300]}")
        run = created.value.json()
        result.custom_run_id = run["id"]
        params = run["parameters"]["params"]
        if (params["namespace"], params["deployment"], params["approval"]) != (namespace, deployment, "dry-run"):
            raise ScenarioFailed(f"the form submitted other parameters: {params}")

        # 3. resume the paused approval through the dialog
        result.begin("approval probe paused")
        paused = _wait_probe_paused(api_url, tag, probe)
        result.approval_run_id = paused
        result.begin("resume dialog")
        page.goto(f"{ui_url}/v2/runs/flow-run/{paused}")
        page.get_by_role("button", name="Open menu").first.click()
        page.get_by_role("menuitem", name="Resume").click()
        dialog = page.get_by_role("dialog", name="Resume Flow Run")
        dialog.get_by_text("rollout_undo").first.wait_for()  # the description (evidence/plan) is shown
        dialog.get_by_role("switch", name="Approve (Optional)").click()
        dialog.get_by_role("textbox", name="Approver (Optional)").fill("ui-test")
        dialog.get_by_role("textbox", name="Comment (Optional)").fill(f"approved in the browser {tag}")
        result.begin("resume submit")
        with page.expect_response(lambda r: r.url.endswith(f"/flow_runs/{paused}/resume")) as resumed:
            dialog.get_by_role("button", name="Resume").click()
        body = resumed.value.json() if resumed.value.ok else {}
        if resumed.value.status not in (200, 201) or body.get("status") != "ACCEPT":
            raise ScenarioFailed(f"resume answered {resumed.value.status} {body}")
        dialog.wait_for(state="hidden")

        result.begin("probe resumed and custom run completed")
        out, err = probe.communicate(timeout=120)
        if probe.returncode != 0:
            raise ScenarioFailed(f"approval probe failed ({probe.returncode}): {err[-800:]}")
        result.approval_answer = json.loads(out.strip().splitlines()[-1])
        _wait_state(api_url, result.custom_run_id, {"COMPLETED"}, 180)
        result.begin("")
    except Exception as exc:
        where = f"step {result.step!r} after {time.monotonic() - t0:.0f}s, page {page.url}"
        if shots is not None:
            shot = shots / f"ui-failure-{tag}.png"
            try:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                where += f", screenshot {shot}"
            except PlaywrightError as shot_error:
                where += f", no screenshot ({shot_error.message[:100]})"
        raise ScenarioFailed(f"{where}: {exc}") from exc
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(10)
        page.context.close()
    if result.server_errors:
        raise ScenarioFailed(f"the browser saw server errors: {result.server_errors}")
    result.seconds = time.monotonic() - t0
    return result


def _wait_probe_paused(api_url: str, tag: str, probe: subprocess.Popen[str], timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    flt = {"flows": {"name": {"any_": ["ui-approval-probe"]}}, "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}},
           "limit": 50}
    while time.monotonic() < deadline:
        if probe.poll() is not None:
            raise ScenarioFailed(f"approval probe exited early: {probe.stderr.read()[-800:] if probe.stderr else ''}")
        runs = _api(api_url, "POST", "/flow_runs/filter", json=flt)
        for run in runs:  # type: ignore[union-attr]
            if run["parameters"].get("tag") == tag:
                return str(run["id"])
        time.sleep(0.5)
    raise ScenarioFailed(f"the approval probe did not pause within {timeout_s:.0f}s")


def probe_env(api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1"})
    return env
