"""Auth (user/password, token refresh after restarts) and TLS / mutual TLS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from grpc_etcd.registry.etcd import (
    AsyncEtcdClient,
    AuthError,
    CompactedError,
    EtcdClient,
    EtcdUnavailableError,
    TLSConfig,
)
from grpc_etcd.registry.watcher import Resync, follow
from grpc_etcd.testing import EtcdServer, TLSUnavailableError

Factory = Callable[..., EtcdServer]


async def test_auth_right_password_works(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("alice", "s3cret"))
    async with AsyncEtcdClient(etcd.endpoint, username="alice", password="s3cret") as c:
        rev = await c.put("k", "v")
        kv = await c.get("k")
        assert kv is not None and kv.mod_revision == rev
        lease = await c.lease_grant(5)
        await c.lease_revoke(lease)


async def test_auth_wrong_password_raises_auth_error(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("alice", "s3cret"))
    async with AsyncEtcdClient(etcd.endpoint, username="alice", password="wrong") as c:
        with pytest.raises(AuthError) as info:
            await c.get("k")
        assert etcd.endpoint in str(info.value)
    async with AsyncEtcdClient(etcd.endpoint) as anonymous:
        with pytest.raises(AuthError):
            await anonymous.put("k", "v")


def test_sync_auth(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("alice", "s3cret"))
    with EtcdClient(etcd.endpoint, username="alice", password="s3cret") as c:
        c.put("k", "v")
        assert c.get("k") is not None
    with (
        EtcdClient(etcd.endpoint, username="alice", password="nope") as c,
        pytest.raises(AuthError),
    ):
        c.get("k")


async def test_auth_token_refreshed_after_restart(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("alice", "s3cret"))
    lost: list[int] = []
    async with AsyncEtcdClient(etcd.endpoint, username="alice", password="s3cret") as c:
        rev = await c.put("k", "1")
        old_token = c._session.token
        assert old_token
        lease = await c.lease_grant(3)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        w = c.watch("k", start_revision=rev)
        async with asyncio.timeout(5):
            assert (await anext(w)).events[0].kv.value == b"1"

        await asyncio.to_thread(etcd.restart)  # simple tokens do not survive a restart

        await c.put("k", "2")  # stale token -> authenticate again -> retried
        assert c._session.token and c._session.token != old_token
        kv = await c.get("k")
        assert kv is not None and kv.value == b"2"
        async with asyncio.timeout(10):
            assert (await anext(w)).events[0].kv.value == b"2"
        await asyncio.sleep(1.5)
        assert not ka.lost and lost == []
        assert await c.lease_time_to_live(lease) >= 0
        await w.aclose()


async def test_auth_after_wiped_restart_does_not_hang(etcd_factory: Factory) -> None:
    """etcd makes a request wait until it has applied the raft index inside a simple token;
    an old token from before a wipe must be dropped, not waited on."""
    etcd = etcd_factory(auth=("alice", "s3cret"))
    async with AsyncEtcdClient(etcd.endpoint, username="alice", password="s3cret") as c:
        for i in range(30):  # push the raft index up, then take a token at that index
            await c.put("warm", str(i))
        c._session.drop_token()
        await c.put("k", "1")
        w = c.watch("k")
        pending = asyncio.ensure_future(anext(w))
        await asyncio.sleep(0.2)

        await asyncio.to_thread(etcd.restart, wipe=True)  # index starts again from 1

        async with asyncio.timeout(3):
            await c.put("k", "2")
            kv = await c.get("k")
        assert kv is not None and kv.value == b"2"
        with pytest.raises(CompactedError):  # the watch saw the history go back
            async with asyncio.timeout(5):
                await pending


def test_credentials_with_auth_disabled_are_fine(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint, username="alice", password="x") as c:
        c.put("k", "v")
        assert c.get("k") is not None


def _tls_server(etcd_factory: Factory, mode: bool | str) -> EtcdServer:
    try:
        return etcd_factory(tls=mode)
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS in grpc_etcd.testing here: {exc}")


async def test_tls(etcd_factory: Factory) -> None:
    etcd = _tls_server(etcd_factory, True)
    assert etcd.ca_file is not None
    tls = TLSConfig(ca_file=str(etcd.ca_file))
    async with AsyncEtcdClient(etcd.url, tls=tls) as c:  # "https://127.0.0.1:PORT"
        rev = await c.put("k", "v")
        w = c.watch("k", start_revision=rev)
        async with asyncio.timeout(5):
            assert (await anext(w)).events[0].kv.value == b"v"
        await w.aclose()
    # without our CA the server is not trusted
    async with AsyncEtcdClient(etcd.url, timeout=0.5) as untrusted:
        with pytest.raises(EtcdUnavailableError):
            await untrusted.get("k")


def test_mutual_tls(etcd_factory: Factory) -> None:
    etcd = _tls_server(etcd_factory, "mutual")
    assert etcd.ca_file and etcd.client_cert_file and etcd.client_key_file
    tls = TLSConfig(
        ca_file=str(etcd.ca_file),
        cert_file=str(etcd.client_cert_file),
        key_file=str(etcd.client_key_file),
    )
    with EtcdClient(etcd.endpoint, tls=tls) as c:
        c.put("k", "v")
        kv = c.get("k")
        assert kv is not None and kv.value == b"v"
    # no client certificate: the handshake fails
    no_cert = TLSConfig(ca_file=str(etcd.ca_file))
    with (
        EtcdClient(etcd.endpoint, tls=no_cert, timeout=0.5) as c,
        pytest.raises(EtcdUnavailableError),
    ):
        c.get("k")


def test_tls_config_validation() -> None:
    with pytest.raises(ValueError, match="go together"):
        AsyncEtcdClient("127.0.0.1:2379", tls=TLSConfig(cert_file="/x"))
    with pytest.raises(ValueError, match="go together"):
        AsyncEtcdClient("127.0.0.1:2379", username="u")


def _limited_user(etcd: EtcdServer, user: str, prefix: str) -> None:
    """``user`` may read and write the keys under ``prefix``, nothing else."""
    etcd.etcdctl("user", "add", f"{user}:pw")
    etcd.etcdctl("role", "add", f"{user}-role")
    etcd.etcdctl("role", "grant-permission", f"{user}-role", "--prefix=true", "readwrite", prefix)
    etcd.etcdctl("user", "grant-role", user, f"{user}-role")


async def test_a_refusal_names_the_operation_the_key_and_the_user(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("root", "s3cret"))
    _limited_user(etcd, "srv", "/sec/srv/app/")
    async with AsyncEtcdClient(etcd.endpoint, username="srv", password="pw") as c:
        await c.put("/sec/srv/app/app-1", "v")  # its own prefix: fine
        with pytest.raises(AuthError) as put:
            await c.put("/sec/srv/other/app-1", "v")
        assert str(put.value) == (
            "cannot put /sec/srv/other/app-1: permission denied for user srv "
            f"[etcd {etcd.endpoint}]"
        )
        assert (put.value.operation, put.value.key, put.value.user) == (
            "put",
            "/sec/srv/other/app-1",
            "srv",
        )
        with pytest.raises(AuthError, match=r"^cannot read the keys under /sec/srv/other/: "):
            await c.get_prefix("/sec/srv/other/")
        with pytest.raises(AuthError, match=r"^cannot put /sec/srv/other/x: permission denied"):
            await c.put_if_absent("/sec/srv/other/x", "v")  # a txn
        watch = c.watch("/sec/srv/other/", prefix=True)
        with pytest.raises(AuthError) as watched:
            async with asyncio.timeout(10):
                await anext(watch)
        assert str(watched.value).startswith(
            "cannot watch the keys under /sec/srv/other/: permission denied for user srv"
        )
    async with AsyncEtcdClient(etcd.endpoint) as anonymous:
        with pytest.raises(AuthError, match=r"^cannot put /k: etcd has auth enabled and no user"):
            await anonymous.put("/k", "v")


def test_sync_refusal_names_the_key(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("root", "s3cret"))
    _limited_user(etcd, "srv", "/sec/srv/app/")
    with (
        EtcdClient(etcd.endpoint, username="srv", password="pw") as c,
        pytest.raises(AuthError, match=r"^cannot delete /sec/x: permission denied for user srv"),
    ):
        c.delete("/sec/x")


async def test_a_refused_watch_warns_once_and_follows_once_granted(
    etcd_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal lasts until someone changes the permissions: ``follow`` retries it (with
    backoff) but warns once, not at every retry, and says when the key can be read again."""
    etcd = etcd_factory(auth=("root", "s3cret"))
    _limited_user(etcd, "srv", "/sec/srv/app/")
    caplog.set_level(logging.INFO, logger="grpc_etcd.watcher")
    async with AsyncEtcdClient(etcd.endpoint, username="srv", password="pw") as c:
        failures: asyncio.Queue[Exception] = asyncio.Queue()
        updates = follow(
            c,
            "/sec/srv/other/",
            prefix=True,
            keeping="the last nodes",
            on_error=failures.put_nowait,
        )
        first = asyncio.create_task(anext(updates))
        for _ in range(4):  # four refused reads, backing off from 0.1 s
            assert isinstance(await asyncio.wait_for(failures.get(), 10), AuthError)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1, warned
        assert warned[0].startswith(
            "cannot watch the keys under /sec/srv/other/: permission denied for user srv"
        )
        assert warned[0].endswith("; keeping the last nodes, retrying until it is granted")
        etcd.etcdctl(
            "role", "grant-permission", "srv-role", "--prefix=true", "read", "/sec/srv/other/"
        )
        assert isinstance(await asyncio.wait_for(first, 20), Resync)
        await updates.aclose()
    assert "/sec/srv/other/ can be read again" in caplog.text
