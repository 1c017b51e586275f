"""_strict_json.py: JSON from strangers read as strictly as Go reads it - ValueError alone."""

from __future__ import annotations

import pytest

from grpc_etcd._strict_json import loads_strict


def test_json_is_read_from_text_or_bytes() -> None:
    assert loads_strict('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert loads_strict(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", '{"w": NaN}', "[Infinity]"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    with pytest.raises(ValueError, match=r"^not valid JSON \(.* is not JSON\)$"):
        loads_strict(constant)


@pytest.mark.parametrize("data", [b"", b"{", b"{'a': 1}", b"[1,]", b"\xff\xfe", "1 2"])
def test_text_that_is_not_json_is_one_value_error(data: bytes | str) -> None:
    with pytest.raises(ValueError, match=r"^not valid JSON \("):
        loads_strict(data)


def test_json_nested_too_deeply_is_a_value_error_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match=r"^not valid JSON \(nested too deeply\)$"):
        loads_strict("[" * 100_000 + "]" * 100_000)
