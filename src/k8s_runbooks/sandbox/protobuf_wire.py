"""Protobuf wire format, just enough to read the small messages kubectl's typed clients send."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def pb_fields(buf: bytes) -> list[tuple[int, Any]]:
    """Top-level fields of a protobuf message: (field number, int or bytes)."""
    out: list[tuple[int, Any]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out.append((num, varint()))
        elif wire == 2:
            n = varint()
            out.append((num, buf[i:i + n]))
            i += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            out.append((num, buf[i:i + size]))
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def pb_object_meta(buf: bytes) -> Obj:
    meta: Obj = {}
    for num, value in pb_fields(buf):
        if num in (1, 2, 3) and value:
            meta[("name", "generateName", "namespace")[num - 1]] = value.decode()
        elif num in (11, 12):
            entry = dict(pb_fields(value))
            meta.setdefault("labels" if num == 11 else "annotations", {})[entry.get(1, b"").decode()] = \
                entry.get(2, b"").decode()
    return meta
