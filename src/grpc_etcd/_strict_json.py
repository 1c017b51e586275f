"""JSON from strangers, read as strictly as Go reads it (pure, no I/O).

Records, service configs and the documents the CLI edits are written by anyone who can write
etcd: whatever they hold, reading them raises ``ValueError`` alone (``not valid JSON
(...)``), which each reader turns into its own error naming the key.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads_strict"]


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(data: bytes | str) -> Any:
    """The JSON value of ``data``; ``ValueError`` (``not valid JSON (...)``) for text that is
    not JSON, including ``NaN`` and ``Infinity`` (Go refuses them) and values nested too
    deeply for Python to read (json raises RecursionError there)."""
    try:
        return json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
