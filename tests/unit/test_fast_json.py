"""The importer's JSON reading (orjson, and the standard library where orjson would differ) gives exactly what
`json.loads` gives, and fails where it fails with its message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8s_runbooks.diagnosis.sources.fast_json import loads, read_file_json

# Where orjson and the standard library part ways: integers beyond 64 bits, lone surrogates, NaN / Infinity,
# numbers beyond a double; and ordinary documents.
DOCUMENTS = [
    '{"a": 18446744073709551616}', '[-9223372036854775809, 9223372036854775807]', '{"n": 123456789012345678901234567890}',
    '["\\ud800"]', '["\\udc00\\ud800"]', "[NaN, Infinity, -Infinity]", "[1e400]", '{"a": 1, "a": 2}',
    '{"tool": "GetResources:{\\"name\\": \\"x\\"}", "v": [1.5, -0.0, 1e-7, true, null]}', '"\\u0000"', " {} ",
]
INVALID = ["", "{", "[1,]", "01", '{"a": "x\ty"}', "\ufeff{}", "[1] x"]


def same(a: object, b: object) -> bool:
    return repr(a) == repr(b)  # repr tells 1 from 1.0 and -0.0 from 0.0


@pytest.mark.parametrize("text", DOCUMENTS)
def test_reads_what_the_standard_library_reads(text: str, tmp_path: Path) -> None:
    assert same(loads(text), json.loads(text))
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert same(read_file_json(path), json.loads(path.read_text(encoding="utf-8", errors="replace")))


@pytest.mark.parametrize("text", INVALID)
def test_fails_where_the_standard_library_fails_with_its_message(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(text)
    with pytest.raises(ValueError) as got:
        loads(text)
    assert str(got.value) == str(expected.value)
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as got_file:
        read_file_json(path)
    assert str(got_file.value) == str(expected.value)


def test_invalid_utf8_reads_as_replacement_characters(tmp_path: Path) -> None:
    path = tmp_path / "logs.json"
    path.write_bytes(b'{"svc": ["caf\xe9 \xff line"]}')
    assert read_file_json(path) == {"svc": ["caf\ufffd \ufffd line"]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_document_reads_the_same(value: object) -> None:
    text = json.dumps(value)
    assert same(loads(text), json.loads(text))
