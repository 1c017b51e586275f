"""What a user probably meant: the nearest known word to a typo (pure, no I/O)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def _folded(word: str) -> str:
    return word.replace("_", "").replace("-", "").lower()


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known word ``word`` most likely misspells, or ``None`` when none is near enough.

    Case, ``_`` and ``-`` are ignored first (``load_balancing_config`` means
    ``loadBalancingConfig``), then difflib's ratio decides (``wieght`` -> ``weight``).
    """
    candidates = sorted({k for k in known if k != word})
    folded = {_folded(k): k for k in candidates}
    if _folded(word) in folded:
        return folded[_folded(word)]
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``" - did you mean 'weight'?"`` when a known word is near ``word``, else ``""``."""
    near = closest(word, known)
    return f" - did you mean {near!r}?" if near is not None else ""
