"""Exceptions raised by grpc-etcd (the etcd client's own live in ``registry.etcd``)."""

from __future__ import annotations

__all__ = ["ConfigError", "GrpcEtcdError", "RecordError"]


class GrpcEtcdError(Exception):
    """Base class of grpc-etcd's own exceptions."""


class RecordError(GrpcEtcdError, ValueError):
    """A registry record that cannot be decoded; ``key`` names where it was read."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"bad registry record at {key or '<no key>'}: {reason}")


class ConfigError(GrpcEtcdError, ValueError):
    """A service config that does not validate; ``key`` names where it was read (may be empty),
    ``reason`` where in the document the fault is and what it is."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f" at {key}" if key else ""
        super().__init__(f"bad service config{where}: {reason}")
