"""An independent reader of the PromQL our builders produce: split a query into its structure (everything
outside string literals) and its string literals decoded as Prometheus does (Go `strconv.Unquote`).

If no input can change the structure, and every literal decodes back to exactly the input, no input can
change the query's meaning.
"""

from __future__ import annotations

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}


class PromqlSyntaxError(ValueError):
    pass


def _unquote_body(query: str, i: int) -> tuple[str, int]:
    """Decode a double-quoted Go string starting after its opening quote at `i`; returns (value, index after
    the closing quote). Raw newlines are not allowed inside, as in Go."""
    out: list[str] = []
    while i < len(query):
        ch = query[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\n":
            raise PromqlSyntaxError(f"raw newline in a string literal at {i}")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = query[i + 1 : i + 2]
        if esc in _SIMPLE:
            out.append(_SIMPLE[esc])
            i += 2
        elif esc == "x":
            out.append(chr(int(query[i + 2 : i + 4], 16)))
            i += 4
        elif esc in ("u", "U"):
            width = 4 if esc == "u" else 8
            out.append(chr(int(query[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        elif esc.isdigit():
            out.append(chr(int(query[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise PromqlSyntaxError(f"unknown escape \\{esc} at {i}")
    raise PromqlSyntaxError("unterminated string literal")


def split(query: str) -> tuple[str, list[str]]:
    """(structure with every string literal replaced by `"§"`, the decoded literals in order).

    Single-quoted and backtick strings are reported as structure: our builders never emit them, so one
    showing up means an input escaped its literal."""
    skeleton: list[str] = []
    literals: list[str] = []
    i = 0
    while i < len(query):
        ch = query[i]
        if ch == '"':
            value, i = _unquote_body(query, i + 1)
            literals.append(value)
            skeleton.append('"§"')
        else:
            skeleton.append(ch)
            i += 1
    return "".join(skeleton), literals
