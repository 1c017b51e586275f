"""Registration against a real etcd: the record, keep-alive, repair, close (sync)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_for

import grpc_etcd
from grpc_etcd.errors import DuplicateRegistrationError
from grpc_etcd.registry import RegistrationState
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"  # copied from shared/vectors


def etcd_value(etcd: EtcdServer, key: str) -> str:
    return etcd.etcdctl("get", key, "--print-value-only").strip()


def lease_ttl(etcd: EtcdServer, lease_id: int) -> int:
    out = json.loads(etcd.etcdctl("lease", "timetolive", f"{lease_id:x}", "-w", "json"))
    return int(out["ttl"])


def test_record_is_the_seeds_byte_for_byte(etcd: EtcdServer) -> None:
    vector = VECTORS / "seed-record.json"
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(
            SERVICE,
            address="127.0.0.1:18089",
            version="v1",
            methods=["ApiTest"],
            instance_id="app-f76d0cba-e89a-11f1-9219-4ae0537f718b",
        )
        assert reg.key == "/hwholiday/srv/app/app-f76d0cba-e89a-11f1-9219-4ae0537f718b"
        assert etcd_value(etcd, reg.key).encode() == vector.read_bytes()
        assert 8 <= lease_ttl(etcd, reg.lease_id) <= 10


def test_record_written_by_etcdctl_is_discovered(etcd: EtcdServer) -> None:
    etcd.etcdctl(
        "put", "/hwholiday/srv/app/by-hand", '{"node":{"version":"v7","address":"127.0.0.1:1"}}'
    )
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        (node,) = registry.nodes(SERVICE)
    assert (node.id, node.version, node.address) == ("by-hand", "v7", "127.0.0.1:1")


def test_prefix_does_not_match_a_longer_service_name(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", "/hwholiday/srv/application/x", '{"node":{"address":"127.0.0.1:1"}}')
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        assert registry.nodes(SERVICE) == []


def test_close_deletes_the_key_and_revokes_the_lease(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", version="v1")
        assert etcd_value(etcd, reg.key)
        reg.close()
        assert reg.state is RegistrationState.CLOSED
        assert etcd_value(etcd, reg.key) == ""
        assert lease_ttl(etcd, reg.lease_id) == -1, "the lease is revoked, not left to expire"
        reg.close()  # idempotent


def test_registry_close_closes_its_registrations(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000")
    assert etcd_value(etcd, reg.key) == ""


def test_update_rewrites_the_record_in_place(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(
            SERVICE, address="127.0.0.1:5000", version="v1", metadata={"zone": "a"}
        )
        lease = reg.lease_id
        reg.update(version="v2", weight=30)
        record = json.loads(etcd_value(etcd, reg.key))
        assert record["node"]["version"] == "v2"
        assert record["metadata"] == {"weight": "30", "zone": "a"}
        assert reg.lease_id == lease
        (node,) = registry.nodes(SERVICE)
        assert (node.version, node.weight, node.key) == ("v2", 30, reg.key)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "0.0.0.0:5000"}, "wildcard"),
        ({"address": "[::]:5000"}, "wildcard"),
        ({"address": "127.0.0.1"}, "host:port"),
        ({"address": "127.0.0.1:5000", "version": ""}, "version"),
        ({"address": "127.0.0.1:5000", "weight": -1}, "weight"),
        ({"address": "127.0.0.1:5000", "ttl": 1}, "ttl"),
        ({"address": "0.0.0.0:5000", "advertise": "0.0.0.0:5000"}, "advertise"),
    ],
)
def test_bad_arguments_raise_precise_errors(
    etcd: EtcdServer, kwargs: dict[str, object], message: str
) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry, pytest.raises(ValueError, match=message):
        registry.register(SERVICE, **kwargs)  # type: ignore[arg-type]


def test_wildcard_address_with_advertise(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address="0.0.0.0:5000", advertise="127.0.0.1:5000")
        assert [n.address for n in registry.nodes(SERVICE)] == ["127.0.0.1:5000"]


def test_key_deleted_by_hand_is_written_again(etcd: EtcdServer) -> None:
    ttl = 3
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=ttl)
        etcd.etcdctl("del", reg.key)
        deleted_at = time.monotonic()
        wait_for(lambda: etcd_value(etcd, reg.key), ttl / 3 + 1, "the key to be written again")
        assert time.monotonic() - deleted_at <= ttl / 3 + 1


def test_lease_keeps_the_key_alive_past_its_ttl(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=2)
        lease = reg.lease_id
        end = time.monotonic() + 4.5
        while time.monotonic() < end:  # sample the key across two full TTLs
            assert etcd_value(etcd, reg.key), "the key vanished while the lease was kept alive"
            time.sleep(0.25)
        assert reg.lease_id == lease and reg.state is RegistrationState.REGISTERED


def test_revoked_lease_is_registered_again(etcd: EtcdServer) -> None:
    ttl = 3
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=ttl)
        old = reg.lease_id
        etcd.etcdctl("lease", "revoke", f"{old:x}")
        wait_for(
            lambda: reg.lease_id != old and etcd_value(etcd, reg.key),
            ttl / 3 + 2,
            "registration on a new lease",
        )
        assert reg.state is RegistrationState.REGISTERED


def test_etcd_restart_with_its_data_keeps_the_registration(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=5)
        snapshots = registry.watch(SERVICE)
        first = next(snapshots)
        assert [n.key for n in first] == [reg.key]
        etcd.restart()
        assert etcd_value(etcd, reg.key)
        # A marker write after the restart: the watcher must deliver it, and nothing before it.
        etcd.etcdctl("put", "/hwholiday/srv/app/marker", '{"node":{"address":"127.0.0.1:9"}}')
        after = next(snapshots)
        assert [n.id for n in after.added] == ["marker"]
        assert after.removed == (), "the restart must not look like a removal"
        assert reg.key in after.nodes
        snapshots.close()  # type: ignore[attr-defined]


def test_etcd_restarted_empty_gets_the_registration_back(etcd: EtcdServer) -> None:
    ttl = 3
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=ttl)
        etcd.restart(wipe=True)
        restarted_at = time.monotonic()
        wait_for(lambda: etcd_value(etcd, reg.key), ttl / 3 + 2, "registration after a wiped etcd")
        assert time.monotonic() - restarted_at <= ttl / 3 + 2
        wait_for(lambda: reg.state is RegistrationState.REGISTERED, 2, "state REGISTERED")


REGISTER_AND_WAIT = """
import sys, time, grpc_etcd
registry = grpc_etcd.Registry(sys.argv[1])
reg = registry.register("hwholiday.srv.app", address="127.0.0.1:5000", ttl=int(sys.argv[2]))
print(reg.key, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_registering_process_frees_the_key_within_ttl(etcd: EtcdServer) -> None:
    ttl = 2
    proc = subprocess.Popen(
        [sys.executable, "-c", REGISTER_AND_WAIT, etcd.endpoint, str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = proc.stdout.readline().strip()
        assert key.startswith("/hwholiday/srv/app/app-")
        assert etcd_value(etcd, key)
        with EtcdClient(etcd.endpoint) as client, client.watch(key) as events:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            for response in events:  # the DELETE etcd makes when the lease expires
                if any(e.type == "delete" for e in response.events):
                    break
            assert time.monotonic() - killed_at <= ttl + 1
        assert not etcd_value(etcd, key)
    finally:
        proc.kill()
        proc.wait()


def test_update_is_checked_as_register_is(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", weight=3)
        before = etcd_value(etcd, reg.key)
        with pytest.raises(ValueError, match="str to str"):
            reg.update(metadata={"z": 1})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="disagrees with weight=4"):
            reg.update(metadata={"weight": "5"}, weight=4)
        assert etcd_value(etcd, reg.key) == before


def test_ttl_beyond_etcds_maximum_is_refused_before_etcd_sees_it(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry, pytest.raises(ValueError, match="ttl"):
        registry.register(SERVICE, address="127.0.0.1:5000", ttl=10**10)


def test_a_second_live_registration_of_one_instance_id_is_refused(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as first, grpc_etcd.Registry(etcd.endpoint) as second:
        reg = first.register(SERVICE, address="127.0.0.1:5000", instance_id="twin", ttl=3)
        with EtcdClient(etcd.endpoint) as client:
            before = client.get(reg.key)
            started = time.monotonic()
            with pytest.raises(DuplicateRegistrationError, match=reg.key) as info:
                second.register(SERVICE, address="127.0.0.1:5001", instance_id="twin")
            # it waited for the first one's lease to run out, which it never did
            assert time.monotonic() - started >= 2
            assert info.value.key == reg.key
            assert client.get(reg.key).value == before.value  # type: ignore[union-attr]
            assert client.get(reg.key).lease == reg.lease_id  # type: ignore[union-attr]


def test_a_registration_only_deletes_a_key_bound_to_its_own_lease(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry, EtcdClient(etcd.endpoint) as client:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", instance_id="twin", ttl=3)
        # another registration takes the key over on a lease of its own
        other = client.lease_grant(30)
        client.put(reg.key, b'{"node":{"address":"127.0.0.1:5001"}}', lease=other)
        taken = client.get(reg.key)
        wait_for(lambda: reg.state is RegistrationState.LOST, 6, "the first to give the key up")
        reg.close()
        assert client.get(reg.key) == taken  # neither rewritten nor deleted by the first
        client.lease_revoke(other)


def test_a_key_overwritten_without_a_lease_is_taken_back(etcd: EtcdServer) -> None:
    ttl = 3
    with grpc_etcd.Registry(etcd.endpoint) as registry, EtcdClient(etcd.endpoint) as client:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", ttl=ttl)
        mine = etcd_value(etcd, reg.key)
        etcd.etcdctl("put", reg.key, '{"node":{"address":"127.0.0.1:6000"}}')  # no lease
        wait_for(lambda: etcd_value(etcd, reg.key) == mine, ttl / 3 + 2, "our record back")
        kv = client.get(reg.key)
        assert kv is not None and kv.lease == reg.lease_id
        assert reg.state is RegistrationState.REGISTERED


def test_registering_over_a_stray_key_without_a_lease(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", "/hwholiday/srv/app/stray", '{"node":{"address":"127.0.0.1:6000"}}')
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5000", instance_id="stray")
        assert json.loads(etcd_value(etcd, reg.key))["node"]["address"] == "127.0.0.1:5000"


def test_a_restart_after_a_crash_waits_for_the_dead_lease(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as client, grpc_etcd.Registry(etcd.endpoint) as registry:
        # what a process killed without closing leaves: a key on a lease nobody keeps alive
        dead = client.lease_grant(3)
        key = "/hwholiday/srv/app/stable-id"
        client.put(key, b'{"node":{"address":"127.0.0.1:6000"}}', lease=dead)
        reg = registry.register(SERVICE, address="127.0.0.1:5000", instance_id="stable-id")
        kv = client.get(key)
        assert kv is not None and kv.lease == reg.lease_id
        assert json.loads(kv.value)["node"]["address"] == "127.0.0.1:5000"
