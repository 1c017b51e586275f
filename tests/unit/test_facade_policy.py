"""policy=, config= and etcd://...?policy= reach the channel's balancer, in both twins."""

from __future__ import annotations

import pytest

import grpc_etcd
import grpc_etcd.aio

NOWHERE = "127.0.0.1:1"  # no etcd needed: the channel is only built, never called
SERVICE = "test.srv.policy"


def test_sync_policy_config_and_target() -> None:
    with grpc_etcd.Registry(NOWHERE) as registry:
        assert registry.channel(SERVICE).config.policy_name == "random"  # alias version
        assert registry.channel(SERVICE, policy="round_robin").config.policy_name == "round_robin"
        configured = {"loadBalancingConfig": [{"least_request": {"choiceCount": 3}}]}
        channel = registry.channel(SERVICE, config=configured)
        assert channel.config.policy_name == "least_request"
        assert channel.config.policy_settings == {"choiceCount": 3}
        # policy= is a shortcut for loadBalancingConfig: it wins over config=.
        both = registry.channel(SERVICE, policy="pick_first", config=configured)
        assert both.config.policy_name == "pick_first"
        with pytest.raises(ValueError, match="round_robin"):
            registry.channel(SERVICE, policy="no_such_policy")
    with grpc_etcd.channel(f"etcd://{NOWHERE}/{SERVICE}?policy=ring_hash") as channel:
        assert channel.config.policy_name == "ring_hash"


async def test_aio_policy_config_and_target() -> None:
    async with grpc_etcd.aio.Registry(NOWHERE) as registry:
        assert registry.channel(SERVICE).config.policy_name == "random"
        channel = registry.channel(SERVICE, policy="round_robin", source={"version": "v2"})
        assert channel.config.policy_name == "round_robin"
        with pytest.raises(ValueError, match="round_robin"):
            registry.channel(SERVICE, policy="no_such_policy")
    async with grpc_etcd.aio.channel(f"etcd://{NOWHERE}/{SERVICE}?policy=ring_hash") as channel:
        assert channel.config.policy_name == "ring_hash"
    with pytest.raises(ValueError, match="no_such_policy"):
        grpc_etcd.aio.channel(f"etcd://{NOWHERE}/{SERVICE}?policy=no_such_policy")
