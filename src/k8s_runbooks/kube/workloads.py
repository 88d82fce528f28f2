"""Mutating primitives on Deployments and pods, plus read-only waits.

The underscore functions change the cluster. They are called ONLY by `k8s_runbooks.guard.Guard.execute`,
which checks protected namespaces, blast radius, cooldown and dry-run first and writes the audit record.
Never import them from a flow or task.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from k8s_runbooks.errors import Forbidden, InvalidInput, NotFound, PermanentError, RunbookError, TransientError
from k8s_runbooks.kube.client import Kube, Op, get_kube
from k8s_runbooks.kube.pods import (
    RESTARTED_AT,
    current_and_previous,
    deployment_pods,
    deployment_replicasets,
    diagnose,
    read_deployment,
)
from k8s_runbooks.models import HealthReport
from k8s_runbooks.settings import Settings

POD_TEMPLATE_HASH = "pod-template-hash"
log = logging.getLogger("k8s_runbooks.kube")
Progress = Callable[[str], None]

DEFAULT_GRACE_SECONDS = 30


# ------------------------------------------------------------------------------ mutations (guard only)
def _delete_pods(kube: Kube, namespace: str, names: list[str], grace_period_seconds: int) -> str:
    deleted, gone = [], []
    for name in names:
        try:
            kube.call(
                Op("delete", "pods", namespace, name),
                kube.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace_period_seconds,
            )
            deleted.append(name)
        except NotFound:
            gone.append(name)  # already replaced: the goal (a fresh pod) is reached
    detail = f"deleted {len(deleted)} pod(s) with grace period {grace_period_seconds}s: {', '.join(deleted) or '-'}"
    return detail + (f"; already gone: {', '.join(gone)}" if gone else "")


VERIFY_ATTEMPTS = 3


def _outcome_unknown(exc: TransientError) -> bool:
    """No HTTP answer (connection dropped, read timeout) or a 504: the write may have been applied."""
    cause = exc.__cause__
    return cause.status == 504 if isinstance(cause, ApiException) else True


def _write_once(kube: Kube, op: Op, applied: Callable[[k8s.V1Deployment], bool], fn: Callable[..., Any], *args: Any,
                **kwargs: Any) -> None:
    """A write that must not be repeated blindly (a second `rollout undo` rolls forward again). When its
    outcome is unknown, read the Deployment back: applied → done; not applied → TransientError (retrying is
    safe); still unknown → PermanentError, so the task policy does not retry and the runbook escalates."""
    try:
        kube.call(op, fn, *args, **kwargs)
        return
    except TransientError as exc:
        if not _outcome_unknown(exc):
            raise
        first = exc
    for attempt in range(VERIFY_ATTEMPTS):
        try:
            dep = read_deployment(kube, op.namespace or "", op.name or "")
        except TransientError:
            time.sleep(1.0 + attempt)
            continue
        if applied(dep):
            return
        raise first
    raise PermanentError(
        f"'{op}' may or may not have been applied: {first.message}; the Deployment could not be read back to check",
        hint=f"check `kubectl rollout history deployment/{op.name} -n {op.namespace}` before acting again",
    )


def _rollout_restart(kube: Kube, namespace: str, name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}

    def applied(dep: k8s.V1Deployment) -> bool:
        return ((dep.spec.template.metadata.annotations or {}) if dep.spec.template.metadata else {}).get(RESTARTED_AT) == stamp

    _write_once(kube, Op("patch", "deployments", namespace, name), applied, kube.apps.patch_namespaced_deployment,
                name, namespace, body)
    return f"rollout restart of {namespace}/{name} requested ({RESTARTED_AT}={stamp})"


def _scale(kube: Kube, namespace: str, name: str, replicas: int) -> str:
    if replicas < 0:
        raise InvalidInput(f"cannot scale {namespace}/{name} to {replicas} replicas")
    body = {"spec": {"replicas": replicas}}
    kube.call(
        Op("patch", "deployments/scale", namespace, name), kube.apps.patch_namespaced_deployment_scale, name, namespace, body
    )
    return f"scaled {namespace}/{name} to {replicas} replicas"


def previous_template(kube: Kube, namespace: str, name: str) -> tuple[dict[str, Any], str, int | None]:
    """The pod template of the previous ReplicaSet without `pod-template-hash` (what kubectl re-applies)."""
    dep = read_deployment(kube, namespace, name)
    current, previous = current_and_previous(dep, deployment_replicasets(kube, dep))
    if previous is None:
        raise InvalidInput(
            f"{namespace}/{name} has no previous ReplicaSet to roll back to",
            hint="kubectl rollout history deployment/" + name,
        )
    template = kube.api_client.sanitize_for_serialization(previous.spec.template)
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH, None)
    revision = (previous.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
    return template, previous.metadata.name, int(revision) if revision and revision.isdigit() else None


def _rollout_undo(kube: Kube, namespace: str, name: str) -> str:
    template, rs_name, revision = previous_template(kube, namespace, name)
    # JSON patch replacing the whole template, as `kubectl rollout undo` does; a merge would keep new env vars.
    ops = [{"op": "replace", "path": "/spec/template", "value": template}]

    def applied(dep: k8s.V1Deployment) -> bool:
        now = kube.api_client.sanitize_for_serialization(dep.spec.template)
        ((now.get("metadata") or {}).get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
        return bool(now == template)

    _write_once(kube, Op("patch", "deployments", namespace, name), applied, kube.apps.patch_namespaced_deployment,
                name, namespace, ops, _content_type="application/json-patch+json")
    return f"rolled back {namespace}/{name} to the template of ReplicaSet {rs_name} (revision {revision})"


def resources_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """`{"<container>": {"limits": {...}, "requests": {...}}}` -> a strategic-merge patch of the Deployment.
    Only resources can be changed this way."""
    containers = []
    for cname, res in patch.items():
        if not isinstance(res, dict) or not set(res) <= {"limits", "requests"} or not res:
            raise InvalidInput(
                f"patch_resources expects {{container: {{'limits': {{...}}, 'requests': {{...}}}}}}, got {patch!r}"
            )
        containers.append({"name": cname, "resources": res})
    if not containers:
        raise InvalidInput("patch_resources needs at least one container")
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def _patch_resources(kube: Kube, namespace: str, name: str, patch: dict[str, Any]) -> str:
    body = resources_patch(patch)
    kube.call(Op("patch", "deployments", namespace, name), kube.apps.patch_namespaced_deployment, name, namespace, body)
    return f"patched resources of {namespace}/{name}: {patch}"


def _set_configmap_keys(kube: Kube, namespace: str, name: str, values: dict[str, str]) -> str:
    """Set keys of a ConfigMap (the `configmap` flag provider); says what each was before."""
    cm = kube.call(Op("get", "configmaps", namespace, name), kube.core.read_namespaced_config_map, name, namespace)
    before = cm.data or {}
    kube.call(Op("patch", "configmaps", namespace, name), kube.core.patch_namespaced_config_map, name, namespace,
              {"data": values})
    return f"ConfigMap {namespace}/{name}: " + ", ".join(
        f"{k} {before.get(k, 'unset')} -> {v}" for k, v in sorted(values.items()))


SELECTOR_UNDO_ANNOTATION = "k8s-runbooks.io/selector-undo"  # the selector a redirect replaced (JSON)


def read_service(kube: Kube, namespace: str, name: str) -> k8s.V1Service:
    return kube.call(Op("get", "services", namespace, name), kube.core.read_namespaced_service, name, namespace)


def _redirect_service(kube: Kube, namespace: str, service: str, pod_template_hash: str) -> str:
    """Narrow the Service's selector to one ReplicaSet's pods (`pod-template-hash`), keeping the original
    selector in an annotation on the Service so `_restore_service` puts it back exactly. A second redirect keeps
    the first original."""
    svc = read_service(kube, namespace, service)
    selector = dict(svc.spec.selector or {})
    annotations = svc.metadata.annotations or {}
    original = annotations.get(SELECTOR_UNDO_ANNOTATION) or json.dumps(selector, sort_keys=True)
    body = {"metadata": {"annotations": {SELECTOR_UNDO_ANNOTATION: original}},
            "spec": {"selector": {**selector, POD_TEMPLATE_HASH: pod_template_hash}}}
    kube.call(Op("patch", "services", namespace, service), kube.core.patch_namespaced_service, service, namespace, body)
    return (f"Service {namespace}/{service} selector {_fmt(selector)} -> {_fmt(body['spec']['selector'])} "
            f"(undo kept in {SELECTOR_UNDO_ANNOTATION})")


def _restore_service(kube: Kube, namespace: str, service: str) -> str:
    """Put back the selector a redirect replaced (from the undo annotation) and drop the annotation."""
    svc = read_service(kube, namespace, service)
    raw = (svc.metadata.annotations or {}).get(SELECTOR_UNDO_ANNOTATION)
    if not raw:
        raise InvalidInput(f"Service {namespace}/{service} has no {SELECTOR_UNDO_ANNOTATION} annotation: nothing to restore")
    try:
        original = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"Service {namespace}/{service}: {SELECTOR_UNDO_ANNOTATION} is not JSON: {raw!r}") from exc
    now = dict(svc.spec.selector or {})
    # JSON patch: a merge patch could not remove the label the redirect added.
    ops = [{"op": "replace", "path": "/spec/selector", "value": original},
           {"op": "remove", "path": "/metadata/annotations/" + SELECTOR_UNDO_ANNOTATION.replace("/", "~1")}]
    kube.call(Op("patch", "services", namespace, service), kube.core.patch_namespaced_service, service, namespace, ops,
              _content_type="application/json-patch+json")
    return f"Service {namespace}/{service} selector {_fmt(now)} -> {_fmt(original)} (restored)"


def _fmt(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


# ------------------------------------------------------------------------------ read-only waits
WATCH_MARGIN_SECONDS = 5.0  # client read timeout beyond the server's timeoutSeconds: a dead server cannot hang a wait
MIN_SNAPSHOT_INTERVAL_SECONDS = 0.2  # bounds the snapshot rate when watch events keep waking the wait


def _snapshot(kube: Kube, namespace: str, name: str) -> tuple[k8s.V1Deployment, int, int, list[str], int]:
    """(deployment, ready pods, total restarts, unhealthy reasons, live pods) of the Deployment's pods."""
    dep = read_deployment(kube, namespace, name)
    pods = [p for p in deployment_pods(kube, dep) if p.metadata.deletion_timestamp is None]
    diagnoses = [diagnose(p) for p in pods]
    ready = sum(1 for d in diagnoses if d.ready)
    restarts = sum(d.restart_count for d in diagnoses)
    reasons = [f"{d.name}: {r}" for d in diagnoses for r in d.reasons]
    return dep, ready, restarts, reasons, len(pods)


def looks_rolled_out(deployment: dict[str, Any], expected_replicas: int | None = None) -> bool:
    """What `kubectl rollout status` waits for, on a Deployment's JSON: the controller has seen the latest spec,
    every replica is updated and ready, and no old replica is left."""
    meta, spec, st = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    desired = expected_replicas if expected_replicas is not None else int(
        spec["replicas"] if spec.get("replicas") is not None else 1)
    return (int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and int(st.get("updatedReplicas") or 0) >= desired
            and int(st.get("readyReplicas") or 0) >= desired
            and int(st.get("replicas") or 0) <= desired)


def wait_for_rollout_event(kube: Kube, namespace: str, name: str, resource_version: str | None,
                           expected_replicas: int | None, seconds: float) -> None:
    """Block until the Deployment changes (after `resource_version`) into a state that `looks_rolled_out`, is
    deleted, or the watch reports an error, or `seconds` pass — whichever comes first. One watch request on the
    one Deployment, the way `kubectl rollout status` waits. Raises RunbookError when the watch cannot be opened
    (e.g. Forbidden: the identity lacks `watch` on deployments); a stream that breaks just ends the wait."""
    timeout = max(1, int(seconds))
    resp = kube.call(
        Op("watch", "deployments", namespace, name), kube.apps.list_namespaced_deployment, namespace,
        field_selector=f"metadata.name={name}", resource_version=resource_version or None, watch=True,
        timeout_seconds=timeout, _preload_content=False,
        _request_timeout=(kube.timeout[0], timeout + WATCH_MARGIN_SECONDS),
    )
    try:
        for line in iter_resp_lines(resp):
            if not line:
                continue
            event = json.loads(line)
            kind = event.get("type")
            if kind in ("ERROR", "DELETED") or (
                    kind in ("ADDED", "MODIFIED") and looks_rolled_out(event.get("object") or {}, expected_replicas)):
                return
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        return  # a broken stream ends this wait early: the next snapshot looks for itself
    finally:
        resp.close()  # mid-stream: the connection cannot be reused
        resp.release_conn()


def wait_until_healthy(
    namespace: str,
    deployment: str,
    expected_replicas: int | None = None,
    stable_seconds: float = 20,
    timeout_seconds: float = 180,
    *,
    poll_seconds: float = 1.0,
    watch: bool = True,
    on_progress: Progress | None = None,
    settings: Settings | None = None,
) -> HealthReport:
    """Wait until ready == desired, the rollout is complete, no old or unhealthy pod is left, and restarts stay
    unchanged for `stable_seconds`. Returns a report either way (healthy=False after the timeout) — the caller
    decides to give up. `settled_at` in the report is when the workload first settled for good (the window
    follows it): the moment it recovered.

    Between snapshots (3 reads) it waits on a watch of the Deployment (`watch`, the default) that returns as
    soon as the Deployment's status says the rollout is complete, so recovery is seen when it happens rather
    than at the next poll; the watch's own timeout is the poll (`poll_seconds`). If the watch is forbidden it
    falls back to plain polling for the rest of the wait (and logs why once)."""
    kube = get_kube(settings)
    started = time.monotonic()
    stable_since: float | None = None
    settled_wall: datetime | None = None
    last_restarts: int | None = None
    detail = ""
    desired = ready = restarts = 0
    use_watch = watch
    while True:
        polled = time.monotonic()
        try:
            dep, ready, restarts, reasons, live = _snapshot(kube, namespace, deployment)
        except TransientError as exc:
            # One failed poll is a missing observation, not a verdict: keep polling until the timeout
            # (a task retry would restart the whole wait, and a few API hiccups would fail the recovery).
            detail = f"{ready}/{desired} ready at the last poll; the API failed the latest one: {exc.message}"
            if on_progress:
                on_progress(detail)
            if time.monotonic() - started >= timeout_seconds:
                return HealthReport(
                    namespace=namespace, name=deployment, healthy=False, ready_replicas=ready, desired_replicas=desired,
                    restarts_stable=False, total_restarts=restarts, waited_seconds=round(time.monotonic() - started, 1),
                    detail=f"not healthy after {timeout_seconds:g}s: {detail}",
                )
            time.sleep(max(poll_seconds, min(exc.retry_after or 0.0, 10.0)))
            continue
        desired = expected_replicas if expected_replicas is not None else (dep.spec.replicas or 0)
        st = dep.status or k8s.V1DeploymentStatus()
        rolled_out = (st.observed_generation or 0) >= (dep.metadata.generation or 0) and (st.updated_replicas or 0) >= desired
        # `live` excludes terminating pods: like kubectl, the verdict does not wait out their grace period.
        settled = ready >= desired and live <= desired and rolled_out and not reasons
        now = time.monotonic()
        if settled and restarts == last_restarts and stable_since is not None:
            if now - stable_since >= stable_seconds:
                return HealthReport(
                    namespace=namespace, name=deployment, healthy=True, ready_replicas=ready, desired_replicas=desired,
                    restarts_stable=True, total_restarts=restarts, waited_seconds=round(now - started, 1),
                    detail=f"{ready}/{desired} ready, restarts stable at {restarts} for {stable_seconds:g}s",
                    settled_at=settled_wall, settled_after_seconds=round(stable_since - started, 2),
                )
        elif settled:
            stable_since, settled_wall = now, datetime.now(timezone.utc)
        else:
            stable_since = settled_wall = None
        last_restarts = restarts
        detail = f"{ready}/{desired} ready" + (f"; {'; '.join(reasons[:3])}" if reasons else "")
        if not rolled_out:
            detail += "; rollout in progress"
        if on_progress:
            on_progress(detail)
        if now - started >= timeout_seconds:
            return HealthReport(
                namespace=namespace, name=deployment, healthy=False, ready_replicas=ready, desired_replicas=desired,
                restarts_stable=False, total_restarts=restarts, waited_seconds=round(now - started, 1),
                detail=f"not healthy after {timeout_seconds:g}s: {detail}",
            )
        if stable_since is not None:  # settled: only the end of the stability window is left to look at
            time.sleep(max(0.0, min(poll_seconds, stable_since + stable_seconds - time.monotonic())))
            continue
        if use_watch:
            try:
                wait_for_rollout_event(kube, namespace, deployment, dep.metadata.resource_version, expected_replicas,
                                       poll_seconds)
            except Forbidden as exc:
                use_watch = False
                log.warning("cannot watch %s/%s (%s): polling every %gs instead; grant `watch` on deployments "
                            "to see recovery when it happens", namespace, deployment, exc.message, poll_seconds)
            except RunbookError:
                pass  # a missing wake-up: the sleep below keeps the poll going
            else:
                time.sleep(max(0.0, polled + MIN_SNAPSHOT_INTERVAL_SECONDS - time.monotonic()))
                continue
        time.sleep(max(0.0, polled + poll_seconds - time.monotonic()))


def wait_for_ready_replicas(
    namespace: str,
    deployment: str,
    replicas: int,
    timeout_seconds: float = 120,
    *,
    poll_seconds: float = 1.0,
    on_progress: Progress | None = None,
    settings: Settings | None = None,
) -> bool:
    """True once `replicas` pods of the Deployment are Ready (and no more exist when scaling down)."""
    kube = get_kube(settings)
    started = time.monotonic()
    while True:
        try:
            _dep, ready, _restarts, _reasons, pods = _snapshot(kube, namespace, deployment)
        except TransientError as exc:  # a missing observation: poll again (see wait_until_healthy)
            if on_progress:
                on_progress(f"the API failed a poll: {exc.message}")
        else:
            if ready >= replicas and pods <= replicas:
                return True
            if on_progress:
                on_progress(f"{ready}/{replicas} ready ({pods} pods)")
        if time.monotonic() - started >= timeout_seconds:
            return False
        time.sleep(poll_seconds)
