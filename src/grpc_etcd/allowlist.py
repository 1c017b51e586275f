"""Which node addresses a client may dial: an allow-list of IP networks (pure).

Whoever can write to the registry can otherwise point a service's traffic anywhere. With
``allow=["10.0.0.0/8", "127.0.0.1/32"]`` a record whose address is outside every listed network
is ignored (the watcher warns once, naming its key) as a malformed record is.

Host names: a record's address that is a host name (``db.internal:5000``) is outside every
network. Resolving it at filter time would check what the name means *now*, not what gRPC dials
later, and whoever writes the record may control that name's DNS too; so only literal IP
addresses can pass an allow-list. An IPv4-mapped IPv6 address (``[::ffff:10.1.2.3]:80``) is
judged as the IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .node import parse_address

__all__ = ["AllowList", "Network", "allow_list"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowList:
    """The networks node addresses must lie in. ``AllowList(["10.0.0.0/8", "::1/128"])``;
    a plain address (``"127.0.0.2"``) is a one-address network. Raises ``ValueError`` naming a
    bad entry; an empty list is refused (it would ignore every node: say so by not serving)."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[str | Network]) -> None:
        if isinstance(networks, str):
            raise ValueError("allow must be a list of networks, not one string")
        parsed: list[Network] = []
        for entry in networks:
            if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
                parsed.append(entry)
                continue
            if not isinstance(entry, str):
                raise ValueError(f"allow: {entry!r} is not a network such as '10.0.0.0/8'")
            try:
                parsed.append(ipaddress.ip_network(entry.strip()))
            except ValueError as exc:
                raise ValueError(f"allow: {entry!r} is not a network ({exc})") from None
        if not parsed:
            raise ValueError("allow must list at least one network")
        self.networks: tuple[Network, ...] = tuple(parsed)

    def allows(self, address: str) -> bool:
        """True when the ``host:port`` address is a literal IP inside one of the networks."""
        try:
            host, _ = parse_address(address)
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False  # a host name, or no valid address at all
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __repr__(self) -> str:
        return f"AllowList({[str(n) for n in self.networks]!r})"


def allow_list(allow: Iterable[str | Network] | AllowList | None) -> AllowList | None:
    """``allow`` as an ``AllowList`` (None: every address is allowed)."""
    if allow is None or isinstance(allow, AllowList):
        return allow
    return AllowList(allow)
