"""Strategies shared by the fuzz tests: JSON a stranger can write, and bytes that are not."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: every fuzz test: no deadline (the machine may be busy), the example count of the profile
fuzzing = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: text, lone UTF-16 surrogates included (JSON escapes them: "\ud800")
texts = st.text(max_size=12) | st.sampled_from(["\ud800", "a\udfffb", "\ud83d\ude00"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity too: etcd stores whatever bytes it gets)."""
    return json.dumps(value).encode()


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def mutated(document: Any) -> st.SearchStrategy[Any]:
    """``document`` with one leaf or member replaced by any JSON value."""

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for key, item in value.items():
                found += paths(item, (*prefix, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                found += paths(item, (*prefix, index))
        return found

    def replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
        if not path:
            return new
        head, rest = path[0], path[1:]
        copy: Any = dict(value) if isinstance(value, dict) else list(value)
        copy[head] = replace(copy[head], rest, new)
        return copy

    return st.tuples(st.sampled_from(paths(document)), json_values).map(
        lambda pair: replace(document, pair[0], pair[1])
    )
