"""Service names, etcd key prefixes and instance ids (pure, no I/O).

The Go original maps the dotted service name ``hwholiday.srv.app`` to the key path
``/hwholiday/srv/app`` and writes one key ``<path>/<id>`` per instance. We watch the prefix
*with* its trailing slash, so ``/app/`` never matches ``/application/...``.

A name that already contains ``/`` is taken as a raw etcd target (etcd's own Go ``naming``
package uses such targets, e.g. ``foo/bar/my-service``, whose keys have no leading ``/``) and is
not rewritten: channels, ``nodes()`` and ``watch()`` read Go services registered that way.
``register()`` takes dotted names only (:func:`validate_dotted`): it writes our own record
format, which etcd's naming resolvers do not read, so a raw target there only ever made a key
(``hwholiday/srv/bad/<id>``, no leading ``/``) that no dotted channel and no ``grpc-etcd ls``
would see.

``grpc-etcd`` is no part of any service name (``a.grpc-etcd.b``, ``foo/grpc-etcd/x``): the keys
of such a service would lie in the namespace of a root's own keys (``/a/grpc-etcd/...`` is where
the services of root ``/a`` keep their configs and client keys: ``a.grpc-etcd.config`` with
instance ``x`` would be the config of service ``x`` under root ``/a``), which ``grpc-etcd ls``
skips. ``register()``, channels, ``nodes()``, ``watch()`` and the CLI refuse such a name alike.
"""

from __future__ import annotations

import re
import uuid

__all__ = [
    "RESERVED_PREFIX",
    "instance_key",
    "new_instance_id",
    "service_name",
    "service_path",
    "service_prefix",
    "validate_dotted",
    "validate_service",
]

_DOTTED_PART = re.compile(r"^[A-Za-z0-9_\-]+$")

#: grpc-etcd's own keys live under ``<root>/grpc-etcd/`` (service configs, and the like): no
#: service's nodes do, so a listing of every service skips it.
RESERVED_PREFIX = "/grpc-etcd/"
_RESERVED_PART = RESERVED_PREFIX.strip("/")


def validate_service(service: str) -> str:
    """Return ``service`` if it is a usable service name, else raise ``ValueError`` naming it."""
    if not isinstance(service, str) or not service.strip():
        raise ValueError(f"service name must be a non-empty string, got {service!r}")
    if any(ch.isspace() for ch in service):
        raise ValueError(f"service name {service!r} must not contain white space")
    if "/" in service:
        if "//" in service.strip("/"):
            raise ValueError(f"service target {service!r} has an empty path segment")
        if _RESERVED_PART in service.strip("/").split("/"):
            raise ValueError(
                f"service target {service!r}: 'grpc-etcd' is no part of a service name (its keys "
                f"would be among grpc-etcd's own, <root>{RESERVED_PREFIX}...)"
            )
        return service
    if _RESERVED_PART in service.split("."):
        raise ValueError(
            f"service name {service!r}: 'grpc-etcd' is no part of a service name (its keys would "
            f"be among grpc-etcd's own, <root>{RESERVED_PREFIX}...)"
        )
    for part in service.split("."):
        if not _DOTTED_PART.match(part):
            raise ValueError(
                f"service name {service!r} must be dot-separated parts of letters, digits, "
                f"'_' or '-' (bad part {part!r})"
            )
    return service


def validate_dotted(service: str) -> str:
    """A dotted service name, as ``register()`` and the CLI take it; a raw ``a/b/c`` target
    is refused with the dotted name it probably meant."""
    if isinstance(service, str) and "/" in service:
        dotted = service.strip("/").replace("/", ".")
        raise ValueError(
            f"service name {service!r} must be dotted (e.g. {dotted!r}); a name with '/' is a "
            "raw etcd naming target, which a channel can read but register() does not write"
        )
    return validate_service(service)


def _normalize_root(root: str) -> str:
    root = root.strip()
    if not root or root == "/":
        return ""
    return "/" + root.strip("/")


def service_path(service: str, root: str = "") -> str:
    """The key path of a service, no trailing slash: ``a.srv.app`` -> ``/a/srv/app``.

    ``root`` is an optional prefix put in front (``/prod`` -> ``/prod/hwholiday/srv/app``).
    """
    validate_service(service)
    path = service.rstrip("/") if "/" in service else "/" + service.replace(".", "/")
    return _normalize_root(root) + path


def service_prefix(service: str, root: str = "") -> str:
    """The prefix to read and watch, with its trailing slash: ``/hwholiday/srv/app/``."""
    return service_path(service, root) + "/"


def service_name(service: str) -> str:
    """The last part of a dotted name (the original's ``node.name``): ``a.srv.app`` -> ``app``."""
    validate_service(service)
    if "/" in service:
        return service.rstrip("/").rsplit("/", 1)[-1]
    return service.rsplit(".", 1)[-1]


def new_instance_id(service: str) -> str:
    """A fresh instance id in the original's form ``<name>-<uuid>``, e.g. ``app-f76d0cba-...``."""
    return f"{service_name(service)}-{uuid.uuid4()}"


def instance_key(service: str, instance_id: str, root: str = "") -> str:
    """The etcd key of one instance: ``<prefix><id>``."""
    if not instance_id or "/" in instance_id:
        raise ValueError(f"instance id {instance_id!r} must be non-empty and contain no '/'")
    return service_prefix(service, root) + instance_id
