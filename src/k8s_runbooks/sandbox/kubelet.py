"""The process kubelet: runs the containers of pods bound to the sandbox's nodes as local processes.

One kubelet serves every node (they are virtual); events carry the pod's node as their source host.

Threads (none per pod):
- the sync loop owns all pod state: mounts (secret/configMap volumes must exist; written as files and kept
  up to date, projection.py), pulls (images.py),
  configures (env from Secrets/ConfigMaps, podconfig.py), starts processes, restarts them with
  CrashLoopBackOff, enforces memory limits, schedules probes (probes.py: startup, liveness, readiness),
  terminates deleted pods and writes pod status;
- the I/O loop (epoll) pumps every container's stdout/stderr into its log file and reaps exited
  processes through pidfds;
- the CPU throttler duty-cycles CPU-limited containers (SIGSTOP/SIGCONT over 100 ms periods);
- a small thread pool runs the probes.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox import images, podconfig, podlogs, probes, projection
from k8s_runbooks.sandbox.controllers import EventRecorder, Informer
from k8s_runbooks.sandbox.errors import ApiError
from k8s_runbooks.sandbox.nodes import node_ip
from k8s_runbooks.sandbox.store import Obj, Store, WatchEvent, now_iso

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"  # where the API server listens, as pods see it
CONFIG_RETRY = 10.0  # how often a container missing a Secret/ConfigMap, or a pod missing a volume, tries again
CFS_PERIOD = 0.1
MEMORY_POLL = 0.2
BACKOFF_START = 10.0
BACKOFF_RESET_AFTER = 600.0
PROBE_PERIOD_ANNOTATION = "sandbox.k8s-runbooks.io/probe-period-ms"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TCK = os.sysconf("SC_CLK_TCK")

_MEM_UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4,
              "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}


def parse_memory(value: Any) -> int | None:
    """Kubernetes memory quantity → bytes (`128Mi`, `1G`, `500000`, `1e6`); None when absent/invalid."""
    if value is None or value == "":
        return None
    s = str(value).strip()
    for unit in sorted(_MEM_UNITS, key=len, reverse=True):
        if s.endswith(unit):
            try:
                return int(float(s[: -len(unit)]) * _MEM_UNITS[unit])
            except ValueError:
                return None
    try:
        return int(float(s))
    except ValueError:
        return None


def parse_cpu(value: Any) -> float | None:
    """Kubernetes CPU quantity → cores (`200m` → 0.2, `1` → 1.0)."""
    if value is None or value == "":
        return None
    s = str(value).strip()
    try:
        return float(s[:-1]) / 1000.0 if s.endswith("m") else float(s)
    except ValueError:
        return None


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TCK
    except (OSError, IndexError, ValueError):
        return None


def _proc_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------ state
@dataclass
class Container:
    name: str
    spec: Obj
    image: str
    command: list[str] | None
    mem_limit: int | None
    cpu_limit: float | None
    proc: subprocess.Popen | None = None
    pid: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    restart_count: int = 0
    starts: int = 0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: Obj | None = None  # current state when not restarted (restartPolicy)
    last_terminated: Obj | None = None
    probes: dict[str, probes.ProbeState] = field(default_factory=dict)
    probe_kill: str | None = None  # "liveness" / "startup": killed by a probe, to be restarted
    pull_failures: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    oom: bool = False
    killing: bool = False
    cpu_acc: float = 0.0
    # CPU throttler state (written by the throttler thread only)
    periods: int = 0
    throttled: int = 0
    stopped: bool = False
    budget: float = 0.0
    last_cpu: float = 0.0
    period_end: float = 0.0
    period_throttled: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class PodState:
    namespace: str
    name: str
    uid: str
    pod: Obj
    ip: str
    containers: dict[str, Container]
    start_time: str = field(default_factory=now_iso)
    terminating: bool = False
    hard_deleted: bool = False
    kill_deadline: float | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_status: Obj | None = None
    node: str = ""
    host_ip: str = HOST_IP
    mounted: bool = False
    mount_retry_at: float = 0.0
    volume_versions: dict[str, str] = field(default_factory=dict)  # configMap/secret volumes on disk (projection)


def _port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the pod's server binds: TIME_WAIT is no clash
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def container_ports(pod: Obj) -> list[int]:
    return sorted({int(p["containerPort"]) for c in pod["spec"].get("containers") or []
                   for p in c.get("ports") or [] if str(p.get("containerPort", "")).isdigit()
                   and (p.get("protocol") or "TCP") == "TCP"})


class IpAllocator:
    def __init__(self, subnet: str) -> None:
        parts = subnet.strip(".").split(".")
        if len(parts) != 2 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
            raise ValueError(f"pod subnet must be two octets like 127.1, got {subnet!r}")
        self.prefix = ".".join(parts)
        self._next = 2
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def allocate(self, ports: Sequence[int] = ()) -> str:
        """The next free IP. With `ports`, an IP where any of them is already bound is skipped: another sandbox on
        the machine with the same subnet (two `sandbox up`s, parallel test sessions) would otherwise hand its pods
        the same address, and the second pod's bind fails: a crash loop nobody injected."""
        with self._lock:
            for _ in range(256 * 254):
                n = self._next
                self._next = 2 if self._next >= 256 * 256 - 2 else self._next + 1
                hi, lo = divmod(n, 256)
                if lo in (0, 255):
                    continue
                ip = f"{self.prefix}.{hi}.{lo}"
                if ip not in self._used and all(_port_free(ip, port) for port in ports):
                    self._used.add(ip)
                    return ip
        raise RuntimeError("pod subnet exhausted")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


# ------------------------------------------------------------------------------------------ I/O loop
class _Stream:
    __slots__ = ("fd", "name", "writer", "buf", "owner")

    def __init__(self, fd: int, name: str, writer: podlogs.LogWriter, owner: "_Output") -> None:
        self.fd, self.name, self.writer, self.buf, self.owner = fd, name, writer, b"", owner


class _Output:
    """One container instance: its two pipes share a log writer, closed once both hit EOF."""

    def __init__(self, writer: podlogs.LogWriter) -> None:
        self.writer = writer
        self.open_streams = 2


class IoLoop:
    """Pumps pipes into log files and reports process exits (pidfd) to a callback."""

    def __init__(self, on_exit) -> None:
        self._sel = selectors.DefaultSelector()
        self._on_exit = on_exit
        self._pending: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sandbox-kubelet-io", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def add(self, proc: subprocess.Popen, writer: podlogs.LogWriter, token: Any) -> None:
        out = _Output(writer)
        items: list[tuple[str, Any]] = []
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            fd = os.dup(pipe.fileno())
            pipe.close()
            os.set_blocking(fd, False)
            items.append(("stream", _Stream(fd, name, writer, out)))
        items.append(("pid", (proc, token)))
        with self._lock:
            self._pending.extend(items)
        self._wake()

    def stop(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                pending, self._pending = self._pending, []
            for kind, item in pending:
                if kind == "stream":
                    self._sel.register(item.fd, selectors.EVENT_READ, ("stream", item))
                else:
                    proc, token = item
                    try:
                        pidfd = os.pidfd_open(proc.pid)
                    except OSError:  # already reaped elsewhere: report the exit right away
                        self._reap(proc, token, None)
                        continue
                    self._sel.register(pidfd, selectors.EVENT_READ, ("pid", (pidfd, proc, token)))
            for key, _ in self._sel.select(timeout=1.0):
                kind, item = key.data
                if kind == "wake":
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif kind == "stream":
                    self._pump(item)
                else:
                    pidfd, proc, token = item
                    self._sel.unregister(pidfd)
                    os.close(pidfd)
                    self._reap(proc, token, pidfd)
        for key in list(self._sel.get_map().values()):
            kind, item = key.data
            if kind == "stream":
                self._close_stream(item)

    def _pump(self, s: _Stream) -> None:
        try:
            data = os.read(s.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if s.buf:
                s.writer.write(s.name, s.buf.decode("utf-8", "replace"))
                s.buf = b""
            self._close_stream(s)
            return
        s.buf += data
        *lines, s.buf = s.buf.split(b"\n")
        for line in lines:
            s.writer.write(s.name, line.decode("utf-8", "replace"))
        if len(s.buf) > 16384:  # a very long line without newline: flush it as one line
            s.writer.write(s.name, s.buf.decode("utf-8", "replace"))
            s.buf = b""

    def _close_stream(self, s: _Stream) -> None:
        try:
            self._sel.unregister(s.fd)
        except (KeyError, ValueError):
            pass
        os.close(s.fd)
        s.owner.open_streams -= 1
        if s.owner.open_streams == 0:
            s.writer.close()

    def _reap(self, proc: subprocess.Popen, token: Any, _pidfd: int | None) -> None:
        # The leader is a zombie: its pid cannot be reused yet, so killing its group is safe. This
        # removes any children it left behind, like a container's cgroup teardown.
        _signal_group(proc.pid, signal.SIGKILL)
        cpu = 0.0
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
        except ChildProcessError:
            if proc.returncode is None:
                proc.returncode = -signal.SIGKILL
        self._on_exit(token, proc.returncode, cpu)


# ------------------------------------------------------------------------------------------ kubelet
class Kubelet:
    def __init__(self, store: Store, recorder: EventRecorder, informer: Informer, *, state_dir: Path, api_url: str,
                 pod_subnet: str = "127.1", crashloop_backoff_cap: float = 40.0,
                 resync_seconds: float = 1.0) -> None:
        self.store = store
        self.recorder = recorder
        self.cache = informer
        self.state_dir = Path(state_dir)
        self.api_url = api_url
        self.ips = IpAllocator(pod_subnet)
        self.backoff_cap = max(float(crashloop_backoff_cap), 0.0)
        self.resync_seconds = resync_seconds
        self.pid_dir = self.state_dir / "pids" / "pods"
        self.pods: dict[tuple[str, str], PodState] = {}
        self._lock = threading.RLock()  # guards self.pods for readers in other threads (metrics)
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._dirty: set[tuple[str, str]] = set()
        self._throttled: list[Container] = []
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sandbox-probe")
        self._io = IoLoop(lambda token, code, cpu: self._queue.put(("exit", (token, code, cpu))))
        self._thread = threading.Thread(target=self._run, name="sandbox-kubelet", daemon=True)
        self._throttler = threading.Thread(target=self._throttle_loop, name="sandbox-cpu-throttle", daemon=True)

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.store.add_listener(self._on_event)
        self._thread.start()
        self._throttler.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop the loops and every pod process: SIGTERM, then SIGKILL after `grace` seconds."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._throttler.join(timeout=2)
        with self._lock:
            containers = [c for p in self.pods.values() for c in p.containers.values() if c.proc is not None]
        for c in containers:
            if c.running:
                _signal_group(c.pid, signal.SIGTERM)
                _signal_group(c.pid, signal.SIGCONT)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.proc.returncode is None for c in containers):
            time.sleep(0.05)
        for c in containers:
            if c.proc.returncode is None:
                _signal_group(c.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(c.proc.returncode is None for c in containers):
            time.sleep(0.02)  # the I/O loop reaps them through their pidfds
        self._io.stop()
        for c in containers:
            if c.proc.returncode is None:  # I/O loop gone: reap directly
                try:
                    os.waitpid(c.pid, 0)
                except ChildProcessError:
                    pass
        self._probes.shutdown(wait=False, cancel_futures=True)
        for f in self.pid_dir.glob("*.pid"):
            f.unlink(missing_ok=True)

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.resource == "pods":
            meta = ev.object["metadata"]
            self._queue.put(("pod", (meta.get("namespace", ""), meta["name"], ev.type, meta.get("uid"))))

    # -------------------------------------------------------------------------------- sync loop
    def _run(self) -> None:
        next_resync = 0.0
        next_mem = 0.0
        while not self._stop.is_set():
            items: list[tuple[str, Any] | None] = []
            try:
                items.append(self._queue.get(timeout=0.1))
                while len(items) < 5000:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for it in items:
                if it is None:
                    return
                try:
                    self._handle(*it)
                except Exception:
                    log.exception("kubelet: handling %s failed", it[0])
            now = time.monotonic()
            try:
                if now >= next_resync:
                    self._resync()
                    next_resync = now + self.resync_seconds
                if now >= next_mem:
                    self._check_memory()
                    next_mem = now + MEMORY_POLL
                self._tick(now)
                self._flush()
            except Exception:
                log.exception("kubelet: sync failed")

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "pod":
            ns, name, type_, uid = payload
            self._sync_pod(ns, name, deleted=type_ == "DELETED", uid=uid)
        elif kind == "exit":
            token, code, cpu = payload
            self._on_exit(token, code, cpu)
        elif kind == "probe":
            self._on_probe(*payload)

    def _served(self, pod: Obj) -> bool:
        """Bound to one of the sandbox's nodes (a pod bound to a node that does not exist never starts)."""
        node = (pod.get("spec") or {}).get("nodeName")
        return bool(node) and self.cache.get("nodes", "", node) is not None

    def _resync(self) -> None:
        seen = set()
        for pod in self.cache.list("pods"):
            if not self._served(pod):
                continue
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            seen.add(key)
            st = self.pods.get(key)
            if st is None or st.uid != pod["metadata"]["uid"] or (
                    pod["metadata"].get("deletionTimestamp") and not st.terminating):
                self._sync_pod(*key, deleted=False, uid=pod["metadata"]["uid"])
        for key, st in list(self.pods.items()):
            if key not in seen and not st.hard_deleted:
                self._sync_pod(*key, deleted=True, uid=st.uid)
        self._refresh_volumes()

    def _pod_dir(self, st: PodState) -> Path:
        return podlogs.pod_dir(self.state_dir, st.namespace, st.name, st.uid)

    def _refresh_volumes(self) -> None:
        """configMap/secret volumes follow their objects (a real kubelet within its sync period; here each resync)."""
        for st in list(self.pods.values()):
            if st.mounted and st.volume_versions and not st.terminating:
                try:
                    st.volume_versions = projection.refresh(self.cache, st.pod, self._pod_dir(st), st.volume_versions)
                except OSError as exc:
                    log.warning("kubelet: refreshing the volumes of %s/%s failed: %s", st.namespace, st.name, exc)

    def _sync_pod(self, ns: str, name: str, *, deleted: bool, uid: str | None) -> None:
        key = (ns, name)
        st = self.pods.get(key)
        if st is not None and uid and st.uid != uid and not deleted:
            # Same name, new pod (e.g. a StatefulSet-like re-create): drop the old one hard.
            self._kill_pod(st, hard=True)
            st = None
        if deleted:
            if st is not None and st.uid == uid:
                self._kill_pod(st, hard=True)
            return
        pod = self.cache.get("pods", ns, name)  # shared, read-only
        if pod is None:
            if st is not None:
                self._kill_pod(st, hard=True)
            return
        if not self._served(pod):
            return
        if st is None:
            if pod["metadata"].get("deletionTimestamp"):
                self.store.finalize_delete("pods", ns, name)
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            st = self._admit(pod)
        st.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not st.terminating:
            self._kill_pod(st, hard=False)

    def _admit(self, pod: Obj) -> PodState:
        meta = pod["metadata"]
        containers: dict[str, Container] = {}
        for spec in pod["spec"].get("containers") or []:
            limits = (spec.get("resources") or {}).get("limits") or {}
            containers[spec["name"]] = Container(
                name=spec["name"], spec=spec, image=spec.get("image") or "", command=None,
                mem_limit=parse_memory(limits.get("memory")), cpu_limit=parse_cpu(limits.get("cpu")))
        node = pod["spec"]["nodeName"]
        st = PodState(meta["namespace"], meta["name"], meta["uid"], pod, self.ips.allocate(container_ports(pod)),
                      containers, node=node, host_ip=node_ip(self.cache.get("nodes", "", node)))
        with self._lock:
            self.pods[(st.namespace, st.name)] = st
        self._mount(st)
        self._dirty.add((st.namespace, st.name))
        return st

    # -------------------------------------------------------------------------------- containers
    def _field_path(self, c: Container) -> str:
        return f"spec.containers{{{c.name}}}"

    def _event(self, st: PodState, c: Container | None, type_: str, reason: str, message: str) -> None:
        self.recorder.record(st.pod, type_, reason, message, field_path=self._field_path(c) if c else None,
                             host=st.node)

    def _mount(self, st: PodState) -> None:
        """Volumes first: a pod whose secret or configMap volume is missing starts nothing (ContainerCreating)."""
        errors = podconfig.volume_errors(self.cache, st.pod)
        if errors:
            for _vol, message in errors:
                self._event(st, None, "Warning", "FailedMount", message)
            st.mount_retry_at = time.monotonic() + min(CONFIG_RETRY, max(self.backoff_cap, 1.0))
            return
        st.mounted = True
        if projection.projected(st.pod):
            try:
                st.volume_versions = projection.mount(self.cache, st.pod, self._pod_dir(st))
            except OSError as exc:
                log.warning("kubelet: writing the volumes of %s/%s failed: %s", st.namespace, st.name, exc)
        _, missing = podconfig.pull_secrets(self.cache, st.pod)
        if missing:
            self._event(st, None, "Warning", "FailedToRetrieveImagePullSecret",
                        f"Unable to retrieve some image pull secrets ({', '.join(missing)}); attempting to pull the "
                        "image may not succeed.")
        for c in st.containers.values():
            self._try_start(st, c)

    def _pull(self, st: PodState, c: Container) -> bool:
        """The image pull (a lookup in the sandbox registries); on failure: ErrImagePull, then ImagePullBackOff."""
        secrets, _missing = podconfig.pull_secrets(self.cache, st.pod)
        policy = c.spec.get("imagePullPolicy") or "IfNotPresent"
        try:
            base = images.pull(c.image, secrets)
        except images.ImageNotFound as exc:
            c.pull_failures += 1
            self._event(st, c, "Normal", "Pulling", f'Pulling image "{c.image}"')
            self._event(st, c, "Warning", "Failed", f'Failed to pull image "{c.image}": {exc}')
            self._event(st, c, "Warning", "Failed", "Error: ErrImagePull")
            c.waiting = ("ErrImagePull", str(exc))
            delay = min(BACKOFF_START * 2 ** (c.pull_failures - 1), max(self.backoff_cap, 1.0))
            c.restart_at = time.monotonic() + min(delay, 1.0)  # show ErrImagePull, then back off
            c.backoff = delay
            self._dirty.add((st.namespace, st.name))
            return False
        if policy == "Always" or c.pull_failures:
            self._event(st, c, "Normal", "Pulling", f'Pulling image "{c.image}"')
            self._event(st, c, "Normal", "Pulled", f'Successfully pulled image "{c.image}" in 0s (0s including '
                        "waiting). Image size: 0 bytes.")
        elif c.starts == 0 or c.restart_count:
            self._event(st, c, "Normal", "Pulled", f'Container image "{c.image}" already present on machine')
        if c.pull_failures:
            c.pull_failures, c.backoff = 0, 0.0
        if c.spec.get("command"):
            c.command = list(c.spec["command"]) + list(c.spec.get("args") or [])
        elif base:
            c.command = base + list(c.spec.get("args") or [])
        else:
            c.command = None
        return True

    def _try_start(self, st: PodState, c: Container) -> None:
        """Pull, configure, start: each step that fails leaves the container waiting with the kubelet's reason."""
        if not self._pull(st, c):
            return
        if c.command is None:
            message = f'image "{c.image}" has no entrypoint: set command in the container spec'
            self._wait(st, c, "CreateContainerError", message, f"Error: {message}")
            return
        try:
            env = self._env(st, c)
        except podconfig.ConfigError as exc:
            self._wait(st, c, "CreateContainerConfigError", str(exc), f"Error: {exc}")
            return
        self._start(st, c, env)

    def _wait(self, st: PodState, c: Container, reason: str, message: str, event: str) -> None:
        self._event(st, c, "Warning", "Failed", event)
        c.waiting = (reason, message)
        c.restart_at = time.monotonic() + min(CONFIG_RETRY, max(self.backoff_cap, 1.0))
        self._dirty.add((st.namespace, st.name))

    def _env(self, st: PodState, c: Container) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": "/tmp",
               "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "HOSTNAME": st.name,
               "KUBERNETES_SERVICE_HOST": HOST_IP, "SANDBOX_API_URL": self.api_url}
        fields = {"metadata.name": st.name, "metadata.namespace": st.namespace, "metadata.uid": st.uid,
                  "status.podIP": st.ip, "status.hostIP": st.host_ip, "spec.nodeName": st.node,
                  "spec.serviceAccountName": str(st.pod["spec"].get("serviceAccountName") or "default")}
        ports = c.spec.get("ports") or []
        if ports:
            env["PORT"] = str(ports[0].get("containerPort"))
        env.update({"POD_IP": st.ip, "POD_NAME": st.name, "POD_NAMESPACE": st.namespace})
        env[projection.ROOTFS_ENV] = str(self._pod_dir(st) / "rootfs")  # where volumeMounts are (projection.py)
        # Marks the pod process as this sandbox's, so `sandbox down` can stop it safely even after the
        # cluster process died (the supervisor checks this before killing anything).
        owner = os.environ.get("K8S_RUNBOOKS_SANDBOX_OWNER")
        if owner:
            env["K8S_RUNBOOKS_SANDBOX_OWNER"] = owner
        env.update(images.image_env(c.image, podlogs.pod_dir(self.state_dir, st.namespace, st.name, st.uid)))
        if images.is_project_image(c.image):  # the one image here that calls the API with its pod's identity
            env.update(self._service_account_env(st))
        env.update(podconfig.container_env(self.cache, st.pod, c.spec))  # raises ConfigError
        for e in c.spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e.get("value") or "")
            elif (e.get("valueFrom") or {}).get("fieldRef"):
                path = e["valueFrom"]["fieldRef"].get("fieldPath", "")
                labels = st.pod["metadata"].get("labels") or {}
                if path.startswith("metadata.labels['"):
                    env[e["name"]] = labels.get(path[len("metadata.labels['"):-2], "")
                else:
                    env[e["name"]] = fields.get(path, "")
        return env

    def _service_account_env(self, st: PodState) -> dict[str, str]:
        """The pod's ServiceAccount credentials (mounted at /var/run/secrets/kubernetes.io/serviceaccount in a real
        pod; a process here cannot have that mount): a TokenRequest token as a kubeconfig in the pod's directory,
        named by K8S_RUNBOOKS_KUBECONFIG. Only for accounts that exist and unless automounting is switched off."""
        from k8s_runbooks.sandbox import identities  # httpx + yaml: only for pods that get a token

        spec = st.pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        if spec.get("automountServiceAccountToken") is False or \
                self.store.try_get("serviceaccounts", st.namespace, account) is None:
            return {}
        directory = podlogs.pod_dir(self.state_dir, st.namespace, st.name, st.uid) / "serviceaccount"
        try:
            # A day: a real kubelet refreshes projected tokens; this one is written once, so it outlives the longest run.
            path = identities.service_account_kubeconfig(self.api_url, directory, st.namespace, account, seconds=86_400)
        except Exception as exc:  # noqa: BLE001 - a pod without a token still starts, as with a failed projection
            log.warning("no token for %s/%s: %s", st.namespace, account, exc)
            return {}
        return {"K8S_RUNBOOKS_KUBECONFIG": str(path), "KUBECONFIG": str(path)}

    def _start(self, st: PodState, c: Container, env: dict[str, str]) -> None:
        log_path = podlogs.container_log_path(self.state_dir, st.namespace, st.name, st.uid, c.name, c.restart_count)
        try:
            proc = subprocess.Popen(c.command, env=env, stdin=subprocess.DEVNULL,  # type: ignore[arg-type]
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    cwd=images.workdir(c.image) or "/tmp", close_fds=True)
        except OSError as exc:
            c.waiting = ("RunContainerError", f"failed to start container: {exc}")
            self._event(st, c, "Warning", "Failed", f"Error: failed to start container {c.name!r}: {exc}")
            c.backoff = c.backoff or min(BACKOFF_START, self.backoff_cap)
            c.restart_at = time.monotonic() + max(c.backoff, 1.0)
            self._dirty.add((st.namespace, st.name))
            return
        c.proc, c.pid = proc, proc.pid
        c.started_at, c.started_mono = now_iso(), time.monotonic()
        c.starts += 1
        c.waiting, c.terminated, c.oom, c.killing, c.probe_kill = None, None, False, False, None
        c.probes = probes.new_states(c.spec, c.started_mono)
        c.stopped, c.budget, c.last_cpu, c.period_end = False, 0.0, 0.0, 0.0
        self._io.add(proc, podlogs.LogWriter(log_path), (st.namespace, st.name, st.uid, c.name, proc.pid))
        (self.pid_dir / f"{st.namespace}_{st.name}_{c.name}.pid").write_text(f"{proc.pid}\n")
        if c.cpu_limit:
            self._throttled = [*self._throttled, c]
        self._event(st, c, "Normal", "Created", f"Created container: {c.name}")
        self._event(st, c, "Normal", "Started", f"Started container {c.name}")
        self._dirty.add((st.namespace, st.name))

    def _on_exit(self, token: tuple[str, str, str, str, int], code: int, cpu: float) -> None:
        ns, name, uid, cname, pid = token
        (self.pid_dir / f"{ns}_{name}_{cname}.pid").unlink(missing_ok=True)
        st = self.pods.get((ns, name))
        if st is None or st.uid != uid or cname not in st.containers:
            return
        c = st.containers[cname]
        if c.pid != pid:
            return
        self._throttled = [x for x in self._throttled if x is not c]
        c.cpu_acc += cpu
        exit_code = 128 - code if code < 0 else code
        if c.oom:
            reason, exit_code = "OOMKilled", 137
        else:
            reason = "Completed" if exit_code == 0 else "Error"
        term = {"exitCode": exit_code, "reason": reason, "startedAt": c.started_at, "finishedAt": now_iso(),
                "containerID": f"sandbox://{pid}"}
        self._dirty.add((ns, name))
        if st.terminating or c.killing:
            c.terminated = term
            self._maybe_finish(st)
            return
        policy = st.pod["spec"].get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
            c.terminated = term
            return
        c.last_terminated = term
        ran = time.monotonic() - c.started_mono
        if ran >= BACKOFF_RESET_AFTER:
            c.backoff = 0.0
        if c.backoff == 0.0:  # first failure in a while: restart at once, as the kubelet does
            c.backoff = min(BACKOFF_START, self.backoff_cap)
            c.restart_count += 1
            self._try_start(st, c)
            return
        delay = c.backoff
        c.backoff = min(c.backoff * 2, self.backoff_cap)
        c.terminated = None
        c.waiting = ("CrashLoopBackOff",
                     f"back-off {delay:g}s restarting failed container={c.name} pod={st.name}_{ns}({uid})")
        c.restart_at = time.monotonic() + delay
        self._event(st, c, "Warning", "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {st.name}_{ns}({uid})")

    def _tick(self, now: float) -> None:
        for st in list(self.pods.values()):
            if st.terminating:
                if st.kill_deadline is not None and now >= st.kill_deadline:
                    for c in st.containers.values():
                        if c.running:
                            _signal_group(c.pid, signal.SIGKILL)
                    st.kill_deadline = None
                continue
            if not st.mounted:
                if now >= st.mount_retry_at:
                    self._mount(st)
                continue
            for c in st.containers.values():
                if c.restart_at is not None and now >= c.restart_at and not c.running:
                    c.restart_at = None
                    if c.waiting and c.waiting[0] == "ErrImagePull":
                        self._image_backoff(st, c)
                    else:
                        if c.waiting and c.waiting[0] == "CrashLoopBackOff":
                            c.restart_count += 1
                        self._try_start(st, c)
                elif c.running:
                    self._probe(st, c, now)

    def _image_backoff(self, st: PodState, c: Container) -> None:
        reason, message = c.waiting or ("ErrImagePull", "")
        c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{c.image}": {reason}: {message}')
        self._event(st, c, "Normal", "BackOff", f'Back-off pulling image "{c.image}"')
        self._event(st, c, "Warning", "Failed", "Error: ImagePullBackOff")
        c.restart_at = time.monotonic() + c.backoff
        self._dirty.add((st.namespace, st.name))

    # -------------------------------------------------------------------------------- probes
    def _probe_period(self, st: PodState, state: probes.ProbeState) -> float:
        ann = (st.pod["metadata"].get("annotations") or {}).get(PROBE_PERIOD_ANNOTATION)
        if ann and ann.isdigit():
            return max(int(ann), 50) / 1000.0
        return state.period

    def _probe(self, st: PodState, c: Container, now: float) -> None:
        startup = c.probes.get("startupProbe")
        for kind, state in c.probes.items():
            if kind != "startupProbe" and startup is not None and not startup.passed:
                continue  # liveness and readiness wait for the startup probe
            if kind == "startupProbe" and state.passed:
                continue
            if state.inflight or now < state.next_at:
                continue
            state.next_at = now + self._probe_period(st, state)
            state.inflight = True
            key, pid = (st.namespace, st.name, st.uid), c.pid
            env = dict(os.environ) if state.spec.get("exec") else {}

            def run(state: probes.ProbeState = state, c: Container = c) -> None:
                ok, msg = probes.run(state.spec, c.spec, st.ip, env)
                self._queue.put(("probe", (key, c.name, pid, state.kind, ok, msg)))
            self._probes.submit(run)

    def _on_probe(self, key: tuple[str, str, str], cname: str, pid: int, kind: str, ok: bool, msg: str) -> None:
        st = self.pods.get(key[:2])
        if st is None or st.uid != key[2] or cname not in st.containers:
            return
        c = st.containers[cname]
        state = c.probes.get(kind)
        if state is None or c.pid != pid:
            return  # a result for an earlier instance of the container
        state.inflight = False
        if not c.running or st.terminating or c.probe_kill:
            return
        label = probes.LABELS[kind]
        if ok:
            state.successes, state.failures = state.successes + 1, 0
            if state.successes >= state.success_threshold and not state.passed:
                state.passed = True
                self._dirty.add(key[:2])
            return
        state.successes, state.failures = 0, state.failures + 1
        self._event(st, c, "Warning", "Unhealthy", f"{label} probe failed: {msg}")
        if state.failures < state.failure_threshold:
            return
        if kind == "readinessProbe":
            if state.passed:
                state.passed = False
                self._dirty.add(key[:2])
            return
        # liveness / startup: the kubelet kills the container; it restarts as its restartPolicy says
        c.probe_kill = label.lower()
        self._event(st, c, "Normal", "Killing", f"Container {c.name} failed {label.lower()} probe, will be restarted")
        _signal_group(c.pid, signal.SIGTERM)
        _signal_group(c.pid, signal.SIGCONT)
        grace = state.spec.get("terminationGracePeriodSeconds")
        if grace is None:
            grace = (st.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30
        pid_to_kill = c.pid
        threading.Timer(float(grace), lambda: _signal_group(pid_to_kill, signal.SIGKILL)
                        if c.pid == pid_to_kill and c.running else None).start()

    # -------------------------------------------------------------------------------- limits
    def _check_memory(self) -> None:
        for st in list(self.pods.values()):
            for c in st.containers.values():
                if not c.mem_limit or not c.running or c.oom:
                    continue
                rss = _proc_rss(c.pid)
                if rss is not None and rss > c.mem_limit:
                    c.oom = True
                    _signal_group(c.pid, signal.SIGKILL)
                    self._event(st, c, "Warning", "OOMKilling",
                                f"Memory cgroup out of memory: Killed process {c.pid} ({c.name}) "
                                f"anon-rss:{rss // 1024}kB, limit:{c.mem_limit // 1024}kB")

    def _throttle_loop(self) -> None:
        """CFS-like bandwidth control: each 100 ms period grants `limit * period` of CPU time; a
        container over its budget is stopped for the rest of the period. Overdraft carries over,
        so the long-run average matches the limit despite the 10 ms resolution of CPU accounting."""
        while not self._stop.wait(0.01):
            now = time.monotonic()
            for c in self._throttled:
                if not c.running or not c.cpu_limit:
                    continue
                cpu = _proc_cpu_seconds(c.pid)
                if cpu is None:
                    continue
                quota = c.cpu_limit * CFS_PERIOD
                if c.period_end == 0.0:
                    c.period_end, c.budget, c.last_cpu = now + CFS_PERIOD, quota, cpu
                    continue
                c.budget -= cpu - c.last_cpu
                c.last_cpu = cpu
                if now >= c.period_end:
                    c.periods += 1
                    if c.period_throttled:
                        c.throttled += 1
                    c.period_end = now + CFS_PERIOD
                    c.budget = min(c.budget + quota, quota)
                    c.period_throttled = False
                    if c.stopped and c.budget > 0:
                        c.stopped = False
                        _signal_group(c.pid, signal.SIGCONT)
                if c.budget <= 0 and not c.stopped and c.running:
                    c.stopped = c.period_throttled = True
                    _signal_group(c.pid, signal.SIGSTOP)
                elif c.stopped:
                    c.period_throttled = True

    # -------------------------------------------------------------------------------- termination
    def _kill_pod(self, st: PodState, *, hard: bool) -> None:
        if hard:
            st.hard_deleted = True
        if not st.terminating or hard:
            st.terminating = True
            grace = int(st.pod["metadata"].get("deletionGracePeriodSeconds")
                        or (st.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
            for c in st.containers.values():
                c.restart_at = None
                if c.running:
                    if not hard:
                        self._event(st, c, "Normal", "Killing", f"Stopping container {c.name}")
                    c.killing = True
                    _signal_group(c.pid, signal.SIGKILL if hard else signal.SIGTERM)
                    _signal_group(c.pid, signal.SIGCONT)
            st.kill_deadline = time.monotonic() + (0 if hard else grace)
            self._dirty.add((st.namespace, st.name))
        self._maybe_finish(st)

    def _maybe_finish(self, st: PodState) -> None:
        if not st.terminating or any(c.running for c in st.containers.values()):
            return
        with self._lock:
            if self.pods.get((st.namespace, st.name)) is st:
                del self.pods[(st.namespace, st.name)]
        self._dirty.discard((st.namespace, st.name))
        self.ips.release(st.ip)
        self.recorder.forget(st.uid)
        if not st.hard_deleted:
            cur = self.store.try_get("pods", st.namespace, st.name)
            if cur is not None and cur["metadata"]["uid"] == st.uid:
                self.store.finalize_delete("pods", st.namespace, st.name)

    # -------------------------------------------------------------------------------- status
    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            st = self.pods.get(key)
            if st is None or st.hard_deleted:
                continue
            status = self._status(st)
            if status == st.last_status:
                continue
            try:
                self.store.mutate("pods", st.namespace, st.name,
                                  lambda o, s=status: o.__setitem__("status", s), subresource="status")
                st.last_status = status
            except ApiError as exc:
                if exc.code == 409:
                    self._dirty.add(key)

    def _condition(self, st: PodState, type_: str, ok: bool, reason: str | None = None, message: str = "") -> Obj:
        status = "True" if ok else "False"
        prev = st.transitions.get(type_)
        if prev is None or prev[0] != status:
            st.transitions[type_] = (status, now_iso())
        cond: Obj = {"type": type_, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": st.transitions[type_][1]}
        if reason and not ok:
            cond["reason"] = reason
            if message:
                cond["message"] = message
        return cond

    def _status(self, st: PodState) -> Obj:
        statuses = []
        for c in st.containers.values():
            startup, readiness = c.probes.get("startupProbe"), c.probes.get("readinessProbe")
            started = c.running and (startup is None or startup.passed)
            cs: Obj = {"name": c.name, "image": c.image, "imageID": images.image_id(c.image) if c.starts else "",
                       "ready": started and (readiness is None or readiness.passed), "restartCount": c.restart_count,
                       "started": started, "state": {}, "lastState": {}}
            if c.pid:
                cs["containerID"] = f"sandbox://{c.pid}"
            if c.running:
                cs["state"]["running"] = {"startedAt": c.started_at}
            elif c.terminated:
                cs["state"]["terminated"] = c.terminated
            else:
                reason, message = c.waiting or ("ContainerCreating", "")
                cs["state"]["waiting"] = {"reason": reason, **({"message": message} if message else {})}
            if c.last_terminated:
                cs["lastState"]["terminated"] = c.last_terminated
            statuses.append(cs)
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        running = any(c.running for c in st.containers.values())
        waiting_restart = any(c.restart_at is not None and c.starts for c in st.containers.values())
        terminated = [c.terminated for c in st.containers.values()]
        if all(terminated) and terminated:
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"
        elif running or waiting_restart or any(c.starts for c in st.containers.values()):
            phase = "Running"
        else:
            phase = "Pending"
        if phase != "Pending" and all(c.starts == 0 for c in st.containers.values()):
            phase = "Pending"
        not_ready = "ContainersNotReady"
        unready = f"containers with unready status: [{' '.join(s['name'] for s in statuses if not s['ready'])}]"
        conditions = [
            self._condition(st, "PodReadyToStartContainers", st.mounted),
            self._condition(st, "Initialized", True),
            self._condition(st, "Ready", all_ready, not_ready, unready),
            self._condition(st, "ContainersReady", all_ready, not_ready, unready),
            self._condition(st, "PodScheduled", True),
        ]
        status: Obj = {"phase": phase, "conditions": conditions, "hostIP": st.host_ip, "hostIPs": [{"ip": st.host_ip}],
                       "startTime": st.start_time, "containerStatuses": statuses, "qosClass": qos_class(st.pod)}
        if st.mounted:  # the pod sandbox (and its IP) exists once the volumes are mounted
            status.update(podIP=st.ip, podIPs=[{"ip": st.ip}])
        return status

    # -------------------------------------------------------------------------------- metrics
    def container_stats(self) -> list[Obj]:
        """Per-container usage for cAdvisor-style metrics (one entry per known container)."""
        out = []
        with self._lock:
            pods = list(self.pods.values())
        for st in pods:
            for c in st.containers.values():
                cpu = c.cpu_acc
                rss = 0
                if c.running:
                    cpu += _proc_cpu_seconds(c.pid) or 0.0
                    rss = _proc_rss(c.pid) or 0
                out.append({"namespace": st.namespace, "pod": st.name, "container": c.name, "image": c.image,
                            "id": f"/kubepods/pod{st.uid}/{c.pid}", "running": c.running,
                            "cpu_seconds": cpu, "rss": rss, "periods": c.periods, "throttled": c.throttled,
                            "memory_limit": c.mem_limit or 0,
                            "cpu_quota": int(c.cpu_limit * CFS_PERIOD * 1_000_000) if c.cpu_limit else None})
        return out


def qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    any_set, guaranteed = False, bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        any_set = any_set or bool(limits) or bool(requests)
        for r in ("cpu", "memory"):
            if r not in limits or requests.get(r, limits[r]) != limits[r]:
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable" if any_set else "BestEffort"
