"""The sandbox's Job controller (batch/v1), as kube-controller-manager's job controller behaves for the Jobs the
Prefect Kubernetes worker submits: non-indexed, `completions`/`parallelism` 1 by default.

- Defaulting on first sight (the API server does it at admission): `controller-uid` / `job-name` labels on the
  Job and its pod template, `spec.selector`, completions, parallelism, backoffLimit 6, completionMode.
- Pods from the template (`<job>-<suffix>`, owned by the Job), one per missing completion, with the events
  `SuccessfulCreate` / `Completed` / `BackoffLimitExceeded`.
- Status: startTime, active, ready, succeeded, failed, terminating; conditions `SuccessCriteriaMet` + `Complete`
  (reason CompletionsReached) or `FailureTarget` + `Failed` (BackoffLimitExceeded, DeadlineExceeded).
- `ttlSecondsAfterFinished`: the finished Job is deleted, its pods with it (garbage collection by owner).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

from k8s_runbooks.sandbox.controllers import EventRecorder, owner_ref
from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.store import Store, WatchEvent, now_iso

log = logging.getLogger("k8s_runbooks.sandbox.jobs")
Obj = dict[str, Any]
COMPONENT = "job-controller"


def _finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def _age(ts: str | None) -> float:
    if not ts:
        return 0.0
    return time.time() - datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def _cond(type_: str, reason: str, message: str) -> Obj:
    now = now_iso()
    return {"type": type_, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason,
            "message": message}


class JobController:
    def __init__(self, store: Store, recorder: EventRecorder, *, resync_seconds: float = 1.0) -> None:
        self.store = store
        self.recorder = recorder
        self.resync_seconds = resync_seconds
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-job-controller", daemon=True)

    def start(self) -> None:
        self.store.add_listener(self._on_event)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.object["metadata"]
        if ev.resource == "jobs":
            self._queue.put((meta["namespace"], meta["name"]))
        elif ev.resource == "pods":
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "Job":
                    self._queue.put((meta["namespace"], ref["name"]))

    def _run(self) -> None:
        next_resync = 0.0
        while not self._stop.is_set():
            keys: set[tuple[str, str]] = set()
            try:
                item = self._queue.get(timeout=max(0.0, next_resync - time.monotonic()))
                if item is not None:
                    keys.add(item)
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        keys.add(item)
            except queue.Empty:
                pass
            if self._stop.is_set():
                return
            if time.monotonic() >= next_resync:
                keys |= {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in self.store.list("jobs")[0]}
                self._collect_garbage()
                next_resync = time.monotonic() + self.resync_seconds
            for ns, name in sorted(keys):
                try:
                    self.sync(ns, name)
                except ApiError as exc:  # conflicts and races with deletions resolve on the next pass
                    log.debug("job %s/%s: %s", ns, name, exc.message)
                except Exception:  # a controller bug must not stop the loop
                    log.exception("job controller %s/%s failed", ns, name)

    # ------------------------------------------------------------------------------ reconcile
    def _default(self, job: Obj) -> Obj:
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                  "controller-uid": uid, "job-name": name}
        spec = job.get("spec") or {}
        if (spec.get("selector") or {}).get("matchLabels", {}).get("batch.kubernetes.io/controller-uid") == uid:
            return job

        def fn(o: Obj) -> None:
            s = o.setdefault("spec", {})
            s.setdefault("completions", 1)
            s.setdefault("parallelism", 1)
            s.setdefault("backoffLimit", 6)
            s.setdefault("completionMode", "NonIndexed")
            s.setdefault("suspend", False)
            s.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            s["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            tmeta = s.setdefault("template", {}).setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            o["metadata"]["labels"] = {**labels, **(o["metadata"].get("labels") or {})}
        return self.store.mutate("jobs", job["metadata"]["namespace"], name, fn)

    def _pods(self, job: Obj) -> list[Obj]:
        uid = job["metadata"]["uid"]
        pods, _ = self.store.list("pods", job["metadata"]["namespace"])
        return [p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    def sync(self, ns: str, name: str) -> None:
        job = self.store.try_get("jobs", ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        done = _finished(job)
        if done:
            ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
            if isinstance(ttl, int) and _age((job.get("status") or {}).get("completionTime")
                                              or self._finished_at(job)) >= ttl:
                self.store.delete("jobs", ns, name)
            return
        job = self._default(job)
        spec = job["spec"]
        pods = self._pods(job)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        status = dict(job.get("status") or {})
        status.setdefault("startTime", now_iso())
        completions = int(spec.get("completions") or 1)
        deadline = spec.get("activeDeadlineSeconds")
        conditions: list[Obj] = []
        if succeeded >= completions:
            conditions = [_cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                          _cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods")]
            self.recorder.record(job, "Normal", "Completed", "Job completed", component=COMPONENT)
        elif failed > int(spec.get("backoffLimit", 6)):
            conditions = [_cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                          _cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
            self.recorder.record(job, "Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                                 component=COMPONENT)
        elif isinstance(deadline, int) and _age(status["startTime"]) >= deadline:
            conditions = [_cond("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"),
                          _cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]
            self.recorder.record(job, "Warning", "DeadlineExceeded", "Job was active longer than specified deadline",
                                 component=COMPONENT)
        if conditions:
            for p in active:  # a finished Job leaves no pod running
                self.store.delete("pods", ns, p["metadata"]["name"], grace_seconds=0)
            status.update(conditions=conditions, active=0, ready=0, succeeded=succeeded, failed=failed,
                          terminating=0, uncountedTerminatedPods={})
            if conditions[-1]["type"] == "Complete":
                status["completionTime"] = now_iso()
        else:
            want = min(int(spec.get("parallelism") or 1), completions - succeeded) - len(active)
            for _ in range(max(0, want)):
                active.append(self._create_pod(job))
            status.update(active=len(active), succeeded=succeeded, failed=failed, terminating=0,
                          uncountedTerminatedPods={},
                          ready=sum(1 for p in active if any(c.get("type") == "Ready" and c.get("status") == "True"
                                                             for c in (p.get("status") or {}).get("conditions") or [])))
        if status != job.get("status"):
            def fn(o: Obj) -> None:
                o["status"] = status
            self.store.mutate("jobs", ns, name, fn, subresource="status")

    def _finished_at(self, job: Obj) -> str | None:
        times = [c.get("lastTransitionTime") for c in (job.get("status") or {}).get("conditions") or []]
        return max((t for t in times if t), default=None)

    def _create_pod(self, job: Obj) -> Obj:
        tmpl = json.loads(json.dumps(job["spec"].get("template") or {}))
        meta, ns = tmpl.get("metadata") or {}, job["metadata"]["namespace"]
        for _ in range(5):
            pod = {"metadata": {"generateName": f"{job['metadata']['name']}-", "namespace": ns,
                                "labels": meta.get("labels") or {}, "ownerReferences": [owner_ref(job)]},
                   "spec": tmpl.get("spec") or {}, "status": {"phase": "Pending", "qosClass": "BestEffort"}}
            if meta.get("annotations"):
                pod["metadata"]["annotations"] = meta["annotations"]
            try:
                created = self.store.create("pods", pod, namespace=ns)
            except ApiError as exc:
                if exc.reason != "AlreadyExists":
                    raise
                continue
            self.recorder.record(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                                 component=COMPONENT)
            return created
        raise ApiError(409, "AlreadyExists", "could not pick a unique pod name")

    def _collect_garbage(self) -> None:
        jobs = {j["metadata"]["uid"] for j in self.store.list("jobs")[0]}
        for p in self.store.list("pods")[0]:
            refs = [r for r in p["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"]
            if refs and all(r.get("uid") not in jobs for r in refs) and not p["metadata"].get("deletionTimestamp"):
                try:
                    self.store.delete("pods", p["metadata"]["namespace"], p["metadata"]["name"])
                except ApiError:
                    pass
