"""Pod log files: the contract between the kubelet (writer) and the API server's `/log` (reader).

Layout: `<state_dir>/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`, one file per container
start. Each line is `<RFC3339Nano UTC timestamp> <stream> <text>` (stream is stdout or stderr), like the
CRI log format, so `timestamps=true` and `sinceSeconds` can be served exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path


def pod_dir(state_dir: Path, namespace: str, pod: str, uid: str) -> Path:
    return Path(state_dir) / "pods" / f"{namespace}_{pod}_{uid}"


def container_log_path(state_dir: Path, namespace: str, pod: str, uid: str, container: str, restart: int) -> Path:
    return pod_dir(state_dir, namespace, pod, uid) / container / f"{restart}.log"


def log_files(state_dir: Path, namespace: str, pod: str, uid: str, container: str) -> list[Path]:
    """Log files of one container, oldest start first."""
    d = pod_dir(state_dir, namespace, pod, uid) / container
    if not d.is_dir():
        return []
    return sorted((p for p in d.glob("*.log") if p.stem.isdigit()), key=lambda p: int(p.stem))


def format_line(stream: str, text: str, when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {stream} {text.rstrip(chr(10))}\n"


def parse_line(line: str) -> tuple[datetime, str, str]:
    """Return (timestamp, stream, text) of one stored line."""
    ts, _, rest = line.partition(" ")
    stream, _, text = rest.partition(" ")
    when = datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return when, stream, text.rstrip("\n")


def read_lines(path: Path) -> Iterator[tuple[datetime, str, str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    try:
                        yield parse_line(line)
                    except ValueError:
                        continue
    except FileNotFoundError:
        return


class LogWriter:
    """Appends a process's output to its log file, line by line (used by the kubelet's pump threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, stream: str, text: str) -> None:
        self._fh.write(format_line(stream, text))

    def close(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            pass
        self._fh.close()
