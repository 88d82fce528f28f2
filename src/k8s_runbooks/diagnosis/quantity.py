"""Kubernetes resource quantities ("200m", "64Mi", "1.5Gi", "15671348Ki") as floats, for comparisons only."""

from __future__ import annotations

import re

_SUFFIX = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_Q = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?\s*$")


def parse_quantity(text: str | int | float | None) -> float | None:
    """The quantity's value in base units (cores, bytes, count); None when it is not a quantity."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = _Q.match(text)
    if not m:
        return None
    return float(m.group(1)) * _SUFFIX[m.group(2) or ""]


def fmt_bytes(value: float) -> str:
    """A byte count the way a person writes a limit: the largest binary unit that keeps it whole-ish."""
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            n = value / size
            return f"{n:.0f}{unit}" if abs(n - round(n)) < 0.05 else f"{n:.1f}{unit}"
    return f"{value:.0f}"


def fmt_cpu(value: float) -> str:
    return f"{value:g}" if value >= 1 and float(value).is_integer() else f"{round(value * 1000)}m"
