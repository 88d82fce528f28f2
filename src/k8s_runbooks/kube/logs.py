"""Container logs (current or previous instance), size-capped and always redacted before returning."""

from __future__ import annotations

from k8s_runbooks.errors import InvalidInput
from k8s_runbooks.kube.client import Op, get_kube
from k8s_runbooks.models import LogExcerpt
from k8s_runbooks.redact import redact_lines
from k8s_runbooks.settings import Settings

MAX_TAIL_LINES = 5000
MAX_LIMIT_BYTES = 2_000_000
MAX_LINE_CHARS = 4000
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


def _pick_container(namespace: str, pod: str, settings: Settings | None) -> str:
    kube = get_kube(settings)
    obj = kube.call(Op("get", "pods", namespace, pod), kube.core.read_namespaced_pod, pod, namespace)
    default = ((obj.metadata.annotations or {}) if obj.metadata else {}).get(DEFAULT_CONTAINER)
    names = [c.name for c in (obj.spec.containers if obj.spec else [])]
    if default in names:
        return default
    if not names:
        raise InvalidInput(f"pod {namespace}/{pod} has no containers")
    return names[0]


def container_logs(
    namespace: str,
    pod: str,
    container: str | None = None,
    previous: bool = False,
    tail_lines: int | None = 200,
    since_seconds: int | None = None,
    limit_bytes: int = 256_000,
    *,
    settings: Settings | None = None,
) -> LogExcerpt:
    """Log lines of one container. 'No previous container' / 'still waiting' become `error`, not exceptions."""
    if tail_lines is not None and tail_lines <= 0:
        raise InvalidInput("tail_lines must be positive (or None for the whole log)")
    if limit_bytes <= 0:
        raise InvalidInput("limit_bytes must be positive")
    tail = min(tail_lines, MAX_TAIL_LINES) if tail_lines is not None else None
    limit = min(limit_bytes, MAX_LIMIT_BYTES)
    container = container or _pick_container(namespace, pod, settings)
    kube = get_kube(settings)
    query: dict[str, object] = {"container": container, "previous": previous, "limitBytes": limit, "tailLines": tail,
                                "sinceSeconds": int(since_seconds) if since_seconds is not None else None}
    try:
        # The log as the API sends it (text/plain): no typed API class to build for one GET.
        body = kube.get_raw(Op("get", "pods/log", namespace, pod), "/api/v1/namespaces/{namespace}/pods/{name}/log",
                            {"namespace": namespace, "name": pod}, query, accept="text/plain, */*")
    except InvalidInput as exc:
        # 400 is how the API says "previous terminated container not found" or "container is waiting to
        # start" — a normal answer for a diagnosis. A wrong container name stays an error.
        if "is not valid for pod" in str(exc):
            raise
        return LogExcerpt(namespace=namespace, pod=pod, container=container, previous=previous, lines=[], error=exc.message)
    text = body.decode("utf-8", errors="replace")
    truncated = len(text.encode("utf-8", errors="replace")) >= limit
    if len(text) > limit:  # the server may overshoot limitBytes slightly
        text, truncated = text[-limit:], True
    lines = text.splitlines()
    if tail is not None and len(lines) > tail:
        lines, truncated = lines[-tail:], True
    capped = [line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " …[line truncated]" for line in lines]
    redacted, count = redact_lines(capped)
    return LogExcerpt(
        namespace=namespace,
        pod=pod,
        container=container,
        previous=previous,
        lines=redacted,
        truncated=truncated or capped != lines,
        redactions=count,
    )


def previous_logs(
    targets: list[tuple[str, str]],
    namespace: str,
    tail_lines: int | None = 200,
    limit_bytes: int = 256_000,
    *,
    max_workers: int = 8,
    settings: Settings | None = None,
) -> list[LogExcerpt]:
    """Previous-container logs of many (pod, container) pairs, in the given order.

    Reads run on a bounded pool: each is a round trip that mostly waits on the API server, and a
    fan-out over dozens of crashing pods would otherwise pay them one after another. The bound keeps
    the API server (and our memory: at most `max_workers` bodies in flight) in check."""
    from concurrent.futures import ThreadPoolExecutor

    def read(target: tuple[str, str]) -> LogExcerpt:
        pod, container = target
        return container_logs(namespace, pod, container, previous=True, tail_lines=tail_lines,
                              limit_bytes=limit_bytes, settings=settings)

    if max_workers <= 1 or len(targets) <= 1:
        return [read(t) for t in targets]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(targets)), thread_name_prefix="pod-logs") as pool:
        return list(pool.map(read, targets))
