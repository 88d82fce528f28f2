"""`shift` (bench/_perturb.py): the snapshot taken later. Every age kubectl prints grows by AGE_SHIFT, every
absolute timestamp (logs, describe, systemd journals, klog, alerts, metrics) moves by CLOCK_SHIFT."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from typing import Any, Callable

from _perturb_text import CellFn, transform_cache, walk

AGE_SHIFT = timedelta(minutes=5)
CLOCK_SHIFT = timedelta(days=400, hours=3, minutes=17, seconds=29)

_AGE = re.compile(r"^(?:\d+[smhdy])+$")
_AGE_PART = re.compile(r"(\d+)([smhdy])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def human_duration(seconds: int) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl prints ages."""
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _older(age: str) -> str:
    if not _AGE.match(age):
        return age
    return human_duration(sum(int(n) * _UNITS[u] for n, u in _AGE_PART.findall(age)) + int(AGE_SHIFT.total_seconds()))


def _age_cell(column: str, cell: str) -> str:
    if column in ("AGE", "LAST SEEN", "FIRST SEEN", "Age"):
        # '3m', '3m (x5 over 10m)'
        return re.sub(r"(?<![\w])(?:\d+[smhdy])+(?![\w])", lambda m: _older(m.group(0)), cell)
    if column == "RESTARTS":
        return re.sub(r"\((?P<age>(?:\d+[smhdy])+) ago\)", lambda m: f"({_older(m.group('age'))} ago)", cell)
    return cell


_CLOCKS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []


def _clock(pattern: str) -> Callable[[Callable[[re.Match[str]], str]], Callable[[re.Match[str]], str]]:
    def register(fn: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        _CLOCKS.append((re.compile(pattern), fn))
        return fn
    return register


@_clock(r"\b(?P<dt>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)")
def _iso(m: re.Match[str]) -> str:
    sep = m.group("dt")[10]
    return (datetime.strptime(m.group("dt").replace("T", " "), "%Y-%m-%d %H:%M:%S") + CLOCK_SHIFT).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


@_clock(r"\b(?P<dt>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)")
def _slashed(m: re.Match[str]) -> str:
    return (datetime.strptime(m.group("dt"), "%Y/%m/%d %H:%M:%S") + CLOCK_SHIFT).strftime("%Y/%m/%d %H:%M:%S")


@_clock(r"\b(?P<wd>Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<dt>\d\d (?:" + "|".join(_MONTHS) + r") \d{4} \d\d:\d\d:\d\d)")
def _rfc1123(m: re.Match[str]) -> str:
    t = datetime.strptime(m.group("dt"), "%d %b %Y %H:%M:%S") + CLOCK_SHIFT
    return f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year} {t:%H:%M:%S}"


@_clock(r"\b(?P<wd>Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<dt>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
def _systemd(m: re.Match[str]) -> str:
    t = datetime.strptime(m.group("dt"), "%Y-%m-%d %H:%M:%S") + CLOCK_SHIFT
    return f"{_DAYS[t.weekday()]} {t:%Y-%m-%d %H:%M:%S}"


@_clock(r"^(?P<mon>" + "|".join(_MONTHS) + r") (?P<day>[ \d]\d) (?P<time>\d\d:\d\d:\d\d)")
def _syslog(m: re.Match[str]) -> str:
    t = datetime(2025, _MONTHS.index(m.group("mon")) + 1, int(m.group("day")),
                 *map(int, m.group("time").split(":"))) + CLOCK_SHIFT
    return f"{_MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S}"


@_clock(r"(?<![\w])(?P<lvl>[IWEF])(?P<md>\d{4}) (?P<time>\d\d:\d\d:\d\d)(?=\.\d+)")
def _klog(m: re.Match[str]) -> str:
    md = m.group("md")
    t = datetime(2025, int(md[:2]), int(md[2:]), *map(int, m.group("time").split(":"))) + CLOCK_SHIFT
    return f"{m.group('lvl')}{t:%m%d %H:%M:%S}"


def shift_clock(s: str) -> str:
    if not any(ch.isdigit() for ch in s):
        return s
    for pattern, fn in _CLOCKS:
        if pattern.pattern.startswith("^"):  # at the start of a line (a journal), not anywhere
            s = "\n".join(pattern.sub(fn, ln) for ln in s.split("\n"))
        else:
            s = pattern.sub(fn, s)
    return s


def _shift_metrics(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    for row in rows[1:]:
        if row and re.fullmatch(r"\d+(?:\.\d+)?", row[0]):
            row[0] = f"{float(row[0]) + CLOCK_SHIFT.total_seconds():.0f}" if "." not in row[0] else str(float(row[0]) + CLOCK_SHIFT.total_seconds())
        elif row:
            row[0] = shift_clock(row[0])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def shift(files: dict[str, Any], rel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cache = dict(files["tool_cache.json"])
    stamp = cache.get("collection_timestamp")
    cell: CellFn = lambda c, s: shift_clock(_age_cell(c, s))  # noqa: E731
    out = dict(files)
    new = transform_cache({k: v for k, v in cache.items() if k != "collection_timestamp"}, shift_clock, cell, None)
    if isinstance(stamp, str):
        try:
            new = {"collection_timestamp": (datetime.fromisoformat(stamp) + CLOCK_SHIFT + AGE_SHIFT).isoformat(), **new}
        except ValueError:
            new = {"collection_timestamp": stamp, **new}
    out["tool_cache.json"] = new
    for name in ("raw_data/logs.json", "raw_data/alert.json"):
        if name in files:
            out[name] = walk(files[name], shift_clock)
    if "raw_data/metrics.csv" in files:
        out["raw_data/metrics.csv"] = _shift_metrics(files["raw_data/metrics.csv"])
    return out, {}
