"""JSON decoding by orjson (a few times faster than the standard library on a tool cache of several MB) wherever
it gives exactly what `json.loads` gives, and by `json.loads` otherwise.

orjson refuses what the standard library accepts in a few corners (invalid UTF-8, which the importer reads as
U+FFFD; lone surrogate escapes; NaN, Infinity and numbers beyond a double) and reads integers beyond 64 bits as
floats: each of those is decoded again the standard library's way, so a case reads the same either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

_INT64 = 9.223372036854775808e18  # orjson reads integer literals outside [-2**63, 2**64) as floats at least this large


def loads(text: str) -> Any:
    """`json.loads(text)`, faster."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if _has_wide_number(value) else value


def _has_wide_number(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())  # keys are strings
        elif kind is list:
            stack.extend(item)
        elif kind is float and abs(item) >= _INT64:
            return True
    return False


def read_file_json(path: Path) -> Any:
    """`json.loads(path.read_text(encoding="utf-8", errors="replace"))`, faster; raises what that raises."""
    try:
        value = orjson.loads(path.read_bytes())
        if not _has_wide_number(value):
            return value
    except orjson.JSONDecodeError:  # also invalid UTF-8, which the text reading below replaces
        pass
    return json.loads(path.read_text(encoding="utf-8", errors="replace"))
