"""Shared test set-up: the etcd fixtures come from grpc_etcd's pytest plugin (entry point)."""

from __future__ import annotations

import sys
from pathlib import Path

# Test helpers (waiting) are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
