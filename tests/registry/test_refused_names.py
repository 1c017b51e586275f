"""Names and versions refused before anything is written or dialled, by both twins."""

from __future__ import annotations

import pytest

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.testing import EtcdServer

GO_NAMING_RECORD = '{"Op":0,"Addr":"127.0.0.1:8080","Metadata":{"version":"v2"}}'


def test_register_refuses_a_slashed_name_and_writes_nothing(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match=r"must be dotted \(e.g. 'hwholiday.srv.bad'\)"):
            registry.register("hwholiday/srv/bad", address="127.0.0.1:5000")
        with pytest.raises(ValueError, match="must be dotted"):
            registry.register("/hwholiday/srv/bad", address="127.0.0.1:5000")
    assert etcd.etcdctl("get", "--prefix", "", "--keys-only").strip() == ""


async def test_aio_register_refuses_a_slashed_name(etcd: EtcdServer) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="must be dotted"):
            await registry.register("hwholiday/srv/bad", address="127.0.0.1:5000")
    assert etcd.etcdctl("get", "--prefix", "", "--keys-only").strip() == ""


def test_grpc_etcd_in_a_name_is_refused_by_register_and_channel_alike(etcd: EtcdServer) -> None:
    """``a.grpc-etcd.b``'s keys would lie under root ``/a``'s own ``/a/grpc-etcd/``, which
    ``grpc-etcd ls`` skips: register() wrote them, ls hid them; now neither side takes it."""
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="'grpc-etcd' is no part of a service name"):
            registry.register("a.grpc-etcd.b", address="127.0.0.1:5000")
        with pytest.raises(ValueError, match="'grpc-etcd' is no part of a service name"):
            registry.channel("a.grpc-etcd.b")
        with pytest.raises(ValueError, match="'grpc-etcd' is no part of a service name"):
            registry.nodes("a.grpc-etcd.config")
    assert etcd.etcdctl("get", "--prefix", "", "--keys-only").strip() == ""


async def test_aio_grpc_etcd_in_a_name_is_refused_by_register_and_channel_alike(
    etcd: EtcdServer,
) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="'grpc-etcd' is no part of a service name"):
            await registry.register("a.grpc-etcd.b", address="127.0.0.1:5000")
        with pytest.raises(ValueError, match="'grpc-etcd' is no part of a service name"):
            registry.channel("a.grpc-etcd.b")
    assert etcd.etcdctl("get", "--prefix", "", "--keys-only").strip() == ""


def test_a_raw_go_naming_target_is_still_read(etcd: EtcdServer) -> None:
    """The earlier decision kept: etcd's Go naming package writes ``<target>/<addr>`` keys."""
    etcd.etcdctl("put", "foo/bar/my-service/127.0.0.1:8080", GO_NAMING_RECORD)
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        (node,) = registry.nodes("foo/bar/my-service")
    assert (node.address, node.version) == ("127.0.0.1:8080", "v2")


@pytest.mark.parametrize("version", ["", " ", "v 1"])
def test_channel_refuses_an_empty_or_spaced_version(etcd: EtcdServer, version: str) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="version must be a non-empty string"):
            registry.channel("hwholiday.srv.app", version=version)
        assert registry.channel("hwholiday.srv.app", version="v1") is not None


@pytest.mark.parametrize("version", ["", " ", "v 1"])
async def test_aio_channel_refuses_an_empty_or_spaced_version(
    etcd: EtcdServer, version: str
) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="version must be a non-empty string"):
            registry.channel("hwholiday.srv.app", version=version)
