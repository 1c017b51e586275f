"""Unmodified gRPC clients (grpcio, grpc-js) routed by version through ``grpc-etcd xds``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import grpc
from click.testing import CliRunner
from waiting import wait_for
from xds_harness import Client, PlaneProcess, Servers, client_command

import grpc_etcd
from grpc_etcd.cli import main as cli
from grpc_etcd.config import config_key
from grpc_etcd.node import MethodInfo
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer


def _who(response: bytes) -> str:
    """The server name in a response (``Response{output: "<name>|..."}``)."""
    return response[2:].decode().split("|")[0]


def _only(result: dict[str, object], *names: str) -> bool:
    answers = result["answers"]
    assert isinstance(answers, dict)
    return not result["errors"] and set(answers) == set(names)


def test_pinned_routing(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str
) -> None:
    with (
        registry.register(service, address=servers.start("a1"), version="v1"),
        registry.register(service, address=servers.start("b1"), version="v2"),
    ):
        client.until(service, lambda r: _only(r, "a1"), within=10, what="v1 -> a1", version="v1")
        for _ in range(3):
            assert client.calls(service, 10, version="v1") == {"answers": {"a1": 10}, "errors": {}}
            assert client.calls(service, 10, version="v2") == {"answers": {"b1": 10}, "errors": {}}


def test_unpinned_spread(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str
) -> None:
    with (
        registry.register(service, address=servers.start("s1"), version="v1"),
        registry.register(service, address=servers.start("s2"), version="v1"),
        registry.register(service, address=servers.start("s3"), version="v2"),
    ):
        client.until(
            service, lambda r: _only(r, "s1", "s2", "s3"), within=10, what="all three", batch=9
        )
        # round_robin over three READY nodes: 30 calls give each 10 (one off at most while a
        # picker is being replaced).
        counts = client.calls(service, 30)["answers"]
        assert set(counts) == {"s1", "s2", "s3"}
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_unknown_version(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str
) -> None:
    with (
        registry.register(service, address=servers.start("u1"), version="v1"),
        registry.register(service, address=servers.start("u2"), version="v2"),
    ):
        client.until(service, lambda r: _only(r, "u1"), within=10, what="v1 -> u1", version="v1")
        result = client.calls(service, 3, version="v9")
        assert not result["answers"]
        ((error, count),) = result["errors"].items()
        assert count == 3
        assert error.startswith("UNAVAILABLE: "), error
        assert service in error and "known versions: v1, v2" in error, error


def test_new_and_removed_registration_seen_within_2s(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str
) -> None:
    with registry.register(service, address=servers.start("n1"), version="v1"):
        client.until(service, lambda r: _only(r, "n1"), within=10, what="n1", version="v1")
        new = registry.register(service, address=servers.start("n2"), version="v1")
        client.until(
            service, lambda r: "n2" in r["answers"], within=2, what="n2 reached", version="v1"
        )
        new.close()
        client.until(service, lambda r: _only(r, "n1"), within=2, what="n2 gone", version="v1")


def test_canary_split_and_fallback(
    client: Client,
    registry: grpc_etcd.Registry,
    servers: Servers,
    service: str,
    kv: EtcdClient,
    etcd_session: EtcdServer,
) -> None:
    def route_set(*args: str) -> None:
        command = ["--etcd", etcd_session.endpoint, "route", "set", service, *args]
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output

    with (
        registry.register(service, address=servers.start("c1"), version="v1"),
        registry.register(service, address=servers.start("c2"), version="v2"),
    ):
        route_set("--split", "v1=90,v2=10")
        client.until(service, lambda r: "c2" in r["answers"], within=10, what="canary", batch=20)
        # 400 calls at 10%: 40 expected, sd 6; [15, 70] fails with probability < 1e-5.
        counts = client.calls(service, 400)["answers"]
        assert 15 <= counts.get("c2", 0) <= 70, counts
        # A split to a version nobody registered goes to the fallback (--force: the CLI
        # refuses such a split otherwise).
        route_set("--split", "v3=1", "--fallback", "version=v2", "--force")
        client.until(service, lambda r: _only(r, "c2"), within=5, what="fallback to v2", batch=10)
        kv.delete(config_key(service))
        client.until(service, lambda r: _only(r, "c1", "c2"), within=5, what="no config", batch=10)


def test_control_plane_killed_then_restarted(
    client: Client,
    registry: grpc_etcd.Registry,
    servers: Servers,
    service: str,
    plane: PlaneProcess,
) -> None:
    with registry.register(service, address=servers.start("k1"), version="v1"):
        client.until(service, lambda r: _only(r, "k1"), within=10, what="k1", version="v1")
        plane.kill()
        try:
            assert client.calls(service, 10, version="v1") == {"answers": {"k1": 10}, "errors": {}}
            with registry.register(service, address=servers.start("k2"), version="v1"):
                assert client.calls(service, 5, version="v1")["answers"] == {"k1": 5}
                plane.start()
                client.until(
                    service, lambda r: "k2" in r["answers"], within=15, what="resync", version="v1"
                )
        finally:
            plane.ensure_running()


def test_caller_labels_from_the_bootstrap_drive_source_routes(
    registry: grpc_etcd.Registry,
    servers: Servers,
    plane: PlaneProcess,
    kv: EtcdClient,
    tmp_path: Path,
) -> None:
    service = "xds.source-routes.grpcio"
    command, env = client_command("grpcio", plane.address, tmp_path, {"version": "v2"})
    caller_v2 = Client("grpcio", command, env, tmp_path / "client.log")
    document = {
        "routes": [{"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]}]
    }
    try:
        with (
            registry.register(service, address=servers.start("l1"), version="v1"),
            registry.register(service, address=servers.start("l3"), version="v3"),
        ):
            kv.put(config_key(service), json.dumps(document))
            caller_v2.until(service, lambda r: _only(r, "l3"), within=10, what="v2 caller -> v3")
            assert caller_v2.calls(service, 10) == {"answers": {"l3": 10}, "errors": {}}
            kv.delete(config_key(service))
    finally:
        caller_v2.close()


def test_a_method_marked_offline_is_not_sent_to_that_node(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str
) -> None:
    offline = {"ApiTest": MethodInfo(online=False)}
    with (
        registry.register(service, address=servers.start("o1"), version="v1", methods=offline),
        registry.register(service, address=servers.start("o2"), version="v1"),
    ):
        client.until(service, lambda r: _only(r, "o2"), within=10, what="o2 only", version="v1")
        assert client.calls(service, 10) == {"answers": {"o2": 10}, "errors": {}}


def test_ring_hash_sends_each_key_to_the_node_a_balanced_channel_picks(
    client: Client,
    registry: grpc_etcd.Registry,
    servers: Servers,
    service: str,
    kv: EtcdClient,
) -> None:
    """One ring for every client (gRFC A42): 100 keys, hashed from the same header by an
    unmodified client through ``grpc-etcd xds`` and by a BalancedChannel, reach the same nodes
    (four nodes, one of weight 2)."""
    document = {"loadBalancingConfig": [{"ring_hash": {"requestHashHeader": "x-user"}}]}
    keys = [f"user-{i}" for i in range(100)]
    with contextlib.ExitStack() as stack:
        for i, name in enumerate(("h1", "h2", "h3", "h4")):
            weight = 2 if i == 3 else None
            stack.enter_context(
                registry.register(service, address=servers.start(name), version="v1", weight=weight)
            )
        kv.put(config_key(service), json.dumps(document))
        stack.callback(kv.delete, config_key(service))
        channel = stack.enter_context(registry.channel(service))
        wait_for(
            lambda: (
                channel.config.policy_name == "ring_hash"
                and len(channel.subchannel_states()) == 4
                and set(channel.subchannel_states().values()) == {grpc.ChannelConnectivity.READY}
            ),
            10,
            "a ring_hash channel READY to its four nodes",
        )
        call = channel.unary_unary("/proto.Api/ApiTest")
        ours = {key: _who(call(b"\n\x02hi", metadata=[("x-user", key)], timeout=5)) for key in keys}
        assert len(set(ours.values())) == 4, "every node owns some of the keys"
        # The xDS client gets the config a little later: retry until its first keys agree.
        client.until(
            service,
            lambda r: _only(r, ours[keys[0]]),
            within=10,
            what="ring_hash config",
            metadata=[("x-user", keys[0])],
        )
        theirs = {}
        for key in keys:
            result = client.calls(service, 1, metadata=[("x-user", key)], timeout=5)
            assert not result["errors"], result
            (theirs[key],) = result["answers"]
        assert theirs == ours


# ---------------------------------------------------------------- locality


def _share(result: dict[str, Any], prefix: str) -> float:
    answers = result["answers"]
    return sum(n for name, n in answers.items() if name.startswith(prefix)) / max(
        1, sum(answers.values())
    )


def test_prefer_local_keeps_a_grpcio_client_in_its_zone_and_fails_over(
    registry: grpc_etcd.Registry,
    servers: Servers,
    plane: PlaneProcess,
    kv: EtcdClient,
    tmp_path: Path,
) -> None:
    """EDS priorities: the client's zone (its bootstrap's --zone) first, the others as the
    failover once every node of its zone fails."""
    service = "xds.prefer-local.grpcio"
    command, env = client_command("grpcio", plane.address, tmp_path, zone="a")
    caller = Client("grpcio", command, env, tmp_path / "client.log")
    document = {"locality": {"mode": "prefer_local", "minClusterSize": 6}}
    local = [servers.start(f"a{i}") for i in range(3)]
    try:
        with contextlib.ExitStack() as stack:
            for zone, addresses in (
                ("a", local),
                ("b", [servers.start(f"b{i}") for i in range(3)]),
            ):
                for address in addresses:
                    stack.enter_context(
                        registry.register(service, address=address, metadata={"zone": zone})
                    )
            kv.put(config_key(service), json.dumps(document))
            stack.callback(kv.delete, config_key(service))
            caller.until(service, lambda r: _share(r, "a") == 1, within=10, what="a only", batch=30)
            for address in local:
                servers.stop(address)
            took = caller.until(
                service, lambda r: _share(r, "b") == 1, within=10, what="failed over", batch=10
            )
            assert took < 5, took
    finally:
        caller.close()


def test_zone_aware_weighs_zones_by_the_clients_connected_to_the_control_plane(
    registry: grpc_etcd.Registry,
    servers: Servers,
    plane: PlaneProcess,
    kv: EtcdClient,
    tmp_path: Path,
) -> None:
    """Envoy's zone-aware shares as locality weights: callers 2/3 in zone a, nodes 1/3 in a:
    an a-client sends 50 % to zone a, the b-client keeps all its calls in b."""
    service = "xds.zone-aware.grpcio"
    callers = []
    for i, zone in enumerate(("a", "a", "b")):
        command, env = client_command("grpcio", plane.address, tmp_path, zone=zone)
        callers.append(Client("grpcio", command, env, tmp_path / f"client{i}.log"))
    document = {"locality": {"mode": "zone_aware", "minClusterSize": 3}}
    try:
        with contextlib.ExitStack() as stack:
            for name, zone in (("za", "a"), ("zb1", "b"), ("zb2", "b")):
                stack.enter_context(
                    registry.register(service, address=servers.start(name), metadata={"zone": zone})
                )
            kv.put(config_key(service), json.dumps(document))
            stack.callback(kv.delete, config_key(service))
            first, second, b_caller = callers
            for caller in callers:  # each connects, and is counted, once it asks for the service
                caller.until(service, lambda r: bool(r["answers"]), within=10, what="answers")
            # grpc's locality picker (weighted_target) draws each call's locality at random, so
            # the share of n calls has sd sqrt(0.25 / n). 400 calls (sd 2.5 points) wait until
            # each a-client has the new weights (the control plane pushes them to every stream;
            # a client applies them on its own time); 2,000 (sd 1.1) then check them: outside
            # +-5 points with probability < 1e-5. (One batch of 400 was outside once in ~20.)
            for caller in (first, second):
                caller.until(
                    service,
                    lambda r: abs(_share(r, "za") - 0.5) < 0.05,
                    within=10,
                    what="50 % local",
                    batch=400,
                )
            assert abs(_share(second.calls(service, 2000), "za") - 0.5) < 0.05
            b_caller.until(
                service, lambda r: _share(r, "zb") == 1, within=10, what="b only", batch=100
            )
    finally:
        for caller in callers:
            caller.close()


def test_subsetting_is_served_as_its_child_policy_over_every_node(
    client: Client, registry: grpc_etcd.Registry, servers: Servers, service: str, kv: EtcdClient
) -> None:
    """gRPC's xDS clients have no subsetting: the control plane serves the child policy
    (round_robin here) over every node, so even a subset of 1 reaches all three."""
    document = {
        "loadBalancingConfig": [
            {"deterministic_subsetting": {"subsetSize": 1, "childPolicy": [{"round_robin": {}}]}}
        ]
    }
    with (
        registry.register(service, address=servers.start("d1"), version="v1"),
        registry.register(service, address=servers.start("d2"), version="v1"),
        registry.register(service, address=servers.start("d3"), version="v1"),
    ):
        kv.put(config_key(service), json.dumps(document))
        try:
            client.until(
                service, lambda r: _only(r, "d1", "d2", "d3"), within=10, what="all three", batch=9
            )
        finally:
            kv.delete(config_key(service))
