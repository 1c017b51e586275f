"""Node weights as policies read them (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..node import WEIGHT_KEY
from .base import Endpoint

__all__ = ["weights_of"]

T = TypeVar("T")


def weights_of(ready: Sequence[Endpoint[T]]) -> list[int] | None:
    """Each endpoint's ``metadata["weight"]`` (absent or not an integer: 1; 0 drains it), or
    None when no node names a weight (all equal: the common case, checked without parsing).

    When every weight is 0 all count as 1: draining every node at once would be an outage,
    not a drain.
    """
    if not any(WEIGHT_KEY in e.node.metadata for e in ready):
        return None
    weights = [1 if (w := e.node.weight) is None else w for e in ready]
    return weights if any(weights) else [1] * len(weights)
