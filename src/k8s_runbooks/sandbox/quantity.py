"""Kubernetes resource quantities (`500m`, `1`, `128Mi`, `1G`, `1e3`): parsing and the canonical text
the API server prints (`resource.Quantity.String()`), for the scheduler, quota and describe output.

Values are exact `Fraction`s of the base unit (cores, bytes, pods), so sums never drift.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """Not a valid Kubernetes quantity."""


def parse(value: Any) -> Fraction:
    """`"250m"` → 1/4, `"1Gi"` → 1073741824, `2` → 2. Raises QuantityError for anything else."""
    if isinstance(value, bool):
        raise QuantityError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    if isinstance(value, (int, float)):
        return Fraction(value)
    s = str(value).strip()
    for suffix, power in _BINARY.items():
        if s.endswith(suffix):
            return _number(s[: -len(suffix)], value) * (1024 ** power)
    for exp_char in ("e", "E"):
        if exp_char in s[1:]:
            mantissa, _, exponent = s.partition(exp_char)
            try:
                return _number(mantissa, value) * Fraction(10) ** int(exponent)
            except ValueError:
                raise QuantityError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}") from None
    suffix = s[-1:] if s[-1:] in _DECIMAL and not s[-1:].isdigit() else ""
    number = s[: -1] if suffix else s
    return _number(number, value) * Fraction(10) ** _DECIMAL[suffix]


def _number(text: str, original: Any) -> Fraction:
    try:
        if not text or text.strip("+-") == "":
            raise ValueError
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise QuantityError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {original!r}"
        ) from None


def try_parse(value: Any) -> Fraction | None:
    if value is None or value == "":
        return None
    try:
        return parse(value)
    except QuantityError:
        return None


def format_quantity(value: Fraction, binary: bool = False) -> str:
    """The canonical text: `Fraction(1, 2)` → `500m`, `3145728000` (binary) → `3000Mi`, 10 → `10`."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if binary and value.denominator == 1 and value >= 1024:
        n, power = int(value), 0
        while n % 1024 == 0 and power < 6:
            n //= 1024
            power += 1
        if power:
            return f"{sign}{n}{[k for k, p in _BINARY.items() if p == power][0]}"
    if value.denominator == 1:
        n = int(value)
        if n >= 1000:
            exp = 0
            while n % 1000 == 0 and exp < 18:
                n //= 1000
                exp += 3
            if exp:
                return f"{sign}{n}{[k for k, p in _DECIMAL.items() if p == exp][0]}"
        return f"{sign}{int(value)}"
    for suffix, exp in (("m", -3), ("u", -6), ("n", -9)):
        scaled = value * Fraction(10) ** -exp
        if scaled.denominator == 1:
            return f"{sign}{int(scaled)}{suffix}"
    return f"{sign}{int(value * 10 ** 9 + Fraction(1, 2))}n"  # rounded up to nano, as the server does


def is_binary_resource(name: str) -> bool:
    """Memory and storage print in binary units (Mi, Gi); CPU and counts in decimal."""
    base = name.split(".")[-1]
    return base in ("memory", "storage", "ephemeral-storage") or base.startswith("hugepages-")


def format_resource(name: str, value: Fraction) -> str:
    return format_quantity(value, binary=is_binary_resource(name))
