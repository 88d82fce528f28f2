"""The files of a recorded case folder: JSON documents (metadata.json, tool_cache.json, raw_data/logs.json, read
by `fast_json`) and raw_data/metrics.csv."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from k8s_runbooks.diagnosis import evidence as ev
from k8s_runbooks.diagnosis.sources.cloud_opsbench_signals import add_logs
from k8s_runbooks.diagnosis.sources.fast_json import read_file_json

MAX_FILE_BYTES = 200 * 1024 * 1024


class CaseError(Exception):
    """A case that cannot be read: missing, truncated or malformed files. The message is one line."""


def read_json(path: Path, what: str) -> Any:
    """A case file's JSON; CaseError (one line) when it is missing, too large or not JSON."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CaseError(f"{what} is larger than {MAX_FILE_BYTES // 2**20} MB")
        return read_file_json(path)
    except FileNotFoundError:
        raise CaseError(f"{what} is missing") from None
    except (ValueError, OSError) as exc:
        raise CaseError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def add_raw_data(evidence: ev.Evidence, raw: Path) -> None:
    """raw_data/logs.json (per service, for the services the tool calls gave no logs of) and metrics.csv."""
    logs = raw / "logs.json"
    if logs.is_file():
        try:
            data = read_file_json(logs)
        except ValueError:
            evidence.notes.append("raw_data/logs.json is not valid JSON")
            data = {}
        known = {x.workload for x in evidence.logs}
        for service, lines in (data.items() if isinstance(data, dict) else []):
            if service not in known:
                add_logs(evidence, str(service), lines, tail=True)
    metrics = raw / "metrics.csv"
    if metrics.is_file():
        add_metrics(evidence, metrics)


def add_metrics(evidence: ev.Evidence, path: Path) -> None:
    """One series per column of numbers; the first column is the time (ISO 8601 or epoch seconds)."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                return
            series: dict[str, ev.MetricSeries] = {}
            columns = header[1:]
            for row in reader:
                if len(row) != len(header):
                    continue
                try:
                    t = datetime.fromisoformat(row[0]).timestamp() if not row[0].replace(".", "").isdigit() else float(row[0])
                except ValueError:
                    continue
                for col, cell in zip(columns, row[1:]):
                    try:
                        value = float(cell)
                    except ValueError:
                        continue
                    found = series.get(col)
                    if found is None:
                        found = series[col] = ev.MetricSeries(name=col)
                    found.points.append((t, value))
            evidence.metrics.extend(series.values())
    except (OSError, csv.Error) as exc:
        evidence.notes.append(f"raw_data/metrics.csv unreadable ({exc})")
