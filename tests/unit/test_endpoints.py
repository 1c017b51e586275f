"""The one etcd endpoint parser (registry/etcd/_endpoints.py), shared by the client and the CLI."""

from __future__ import annotations

import pytest

from grpc_etcd.cli._common import Options
from grpc_etcd.registry.etcd import EtcdEndpoint, parse_endpoint, split_endpoints


@pytest.mark.parametrize(
    ("raw", "host", "port", "secure", "address"),
    [
        ("127.0.0.1:2379", "127.0.0.1", 2379, None, "127.0.0.1:2379"),
        ("localhost", "localhost", 2379, None, "localhost:2379"),
        ("etcd-0.etcd.svc.cluster.local:2379", "etcd-0.etcd.svc.cluster.local", 2379, None, None),
        ("::1", "::1", 2379, None, "[::1]:2379"),
        ("[::1]", "::1", 2379, None, "[::1]:2379"),
        ("[::1]:2380", "::1", 2380, None, "[::1]:2380"),
        ("[0:0::1]:2380", "::1", 2380, None, "[::1]:2380"),
        ("fe80::1%eth0", "fe80::1%eth0", 2379, None, "[fe80::1%eth0]:2379"),
        ("https://[::1]:2379/", "::1", 2379, True, "[::1]:2379"),
        ("HTTP://a:1", "a", 1, False, "a:1"),
        ("  b:65535  ", "b", 65535, None, "b:65535"),
    ],
)
def test_accepted_forms(
    raw: str, host: str, port: int, secure: bool | None, address: str | None
) -> None:
    endpoint = parse_endpoint(raw)
    assert endpoint == EtcdEndpoint(host, port, secure)
    assert endpoint.address == (address or f"{host}:{port}")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not a host", "not a host name"),
        ("127.0.0.1:port", "bad port 'port'"),
        ("127.0.0.1:70000", "bad port '70000'"),
        ("127.0.0.1:0", "bad port '0'"),
        ("127.0.0.1:", "bad port ''"),
        ("unix:///tmp/etcd.sock", "unsupported scheme 'unix'"),
        ("http://", "no host"),
        ("http://a:1/v3", "no path"),
        ("[::1", "expected [IPV6]:PORT"),
        ("[::1]2379", "expected [IPV6]:PORT"),
        ("[nope]:1", "'nope' is not an IPv6 address"),
        ("::1:2379:x", "in brackets"),
        ("a_b:1", "not a host name"),
    ],
)
def test_refused_forms_name_the_endpoint_and_the_fault(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match="malformed etcd endpoint") as info:
        parse_endpoint(raw)
    assert repr(raw) in str(info.value) and why in str(info.value)


def test_lists_drop_blanks_and_duplicates() -> None:
    assert [e.address for e in split_endpoints("a:1, b:2,,a:1,[::1],::1")] == [
        "a:1",
        "b:2",
        "[::1]:2379",
    ]
    for nothing in ("", " , ", []):
        with pytest.raises(ValueError, match="no etcd endpoint given"):
            split_endpoints(nothing)


def test_the_cli_takes_what_the_client_takes() -> None:
    Options(endpoints="::1").validate()  # refused by the CLI's own parser before
    Options(endpoints="https://[::1]:2379,etcd-1:2379").validate()
    with pytest.raises(ValueError, match="malformed etcd endpoint 'nope:x'"):
        Options(endpoints="a:1,nope:x").validate()
