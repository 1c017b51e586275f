"""The view of a service's calling channels, from their client keys (pure, no etcd)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.clients import (
    Client,
    ClientTracker,
    ClientView,
    client_key,
    client_labels,
    clients_prefix,
    decode_client,
    encode_client,
)
from grpc_etcd.snapshot import Change

PREFIX = clients_prefix("a.srv.app")


def test_keys_live_under_the_clients_prefix_of_the_service_and_root() -> None:
    assert PREFIX == "/grpc-etcd/clients/a.srv.app/"
    assert client_key("a.srv.app", "c1", "/prod") == "/prod/grpc-etcd/clients/a.srv.app/c1"
    with pytest.raises(ValueError, match="client id"):
        client_key("a.srv.app", "a/b")


def test_labels_come_from_source_then_the_zone_variable() -> None:
    env = {"GRPC_ETCD_ZONE": "b"}
    assert client_labels({"service": "web"}, env) == {"service": "web", "zone": "b"}
    assert client_labels({"zone": "a"}, env) == {"zone": "a"}
    assert client_labels(None, {"GRPC_ETCD_ZONE": " "}) == {}
    assert client_labels({"zone": ""}, {}) == {}


def test_the_zone_variable_goes_under_the_locality_key() -> None:
    env = {"GRPC_ETCD_ZONE": "eu"}
    assert client_labels({"app": "web"}, env, "region") == {"app": "web", "region": "eu"}
    assert client_labels({"region": "us"}, env, "region") == {"region": "us"}
    assert client_labels({"zone": "a"}, env, "region") == {"zone": "a", "region": "eu"}


def test_the_balancer_labels_the_client_key_with_the_configs_locality_key() -> None:
    from grpc_etcd.config import parse_config
    from grpc_etcd.policies import Balancer

    balancer = Balancer[str](source={"app": "web"}, zone="eu")
    assert balancer.client_labels == {"app": "web", "zone": "eu"}
    region = {"locality": {"key": "region", "mode": "zone_aware"}}
    balancer.configure(parse_config(region))
    assert balancer.client_labels == {"app": "web", "region": "eu"}
    named = Balancer[str](parse_config(region), source={"region": "us", "zone": "a"}, zone="eu")
    assert named.client_labels == {"region": "us", "zone": "a"}


def test_a_value_round_trips_and_strangers_are_refused() -> None:
    value = encode_client({"zone": "a", "service": "web"})
    assert value == b'{"labels":{"service":"web","zone":"a"}}'
    assert decode_client(value) == ({"service": "web", "zone": "a"}, [])
    assert decode_client(b'{"labels":{"zone":""},"later":1}') == ({}, ["zone"])
    assert decode_client(b"{}") == ({}, [])
    for bad, why in [
        (b"not json", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"labels":["a"]}', "object of strings"),
        (b'{"labels":{"zone":1}}', "object of strings"),
    ]:
        with pytest.raises(ValueError, match=why):
            decode_client(bad)


def test_the_view_holds_its_own_client_sorted_among_the_others() -> None:
    own = Client("m", {"zone": "a"})
    alone = ClientView(own)
    assert not alone.known and alone.count == 1 and alone.index == 0
    num, den = alone.place()
    assert den == 1 << 64 and 0 <= num < den  # a stand-in place drawn from the id
    assert ClientView(Client("n")).place() != alone.place()
    view = ClientView(own, (Client("z", {"zone": "b"}), Client("a"), Client("m", {})), 7)
    assert [c.id for c in view.clients] == ["a", "m", "z"]
    assert view.clients[1].labels == {"zone": "a"}, "own labels win over what etcd holds"
    assert (view.known, view.index, view.count, view.place()) == (True, 1, 3, (1, 3))
    assert view.spread() == {"a": 1, "b": 1}
    assert view.spread("service") == {}


def test_tracker_warns_once_per_bad_key_and_keeps_routing() -> None:
    tracker = ClientTracker(PREFIX, Client("me"))
    warnings = tracker.resync(
        [
            (PREFIX + "c1", encode_client({"zone": "a"})),
            (PREFIX + "c2", b"garbage"),
            (PREFIX + "c3", b'{"labels":{"zone":""}}'),
            (PREFIX + "deeper/c4", b"garbage"),  # another service's (a name with '/')
        ],
        5,
    )
    assert warnings == [
        f"ignoring client key {PREFIX}c2: not valid JSON",
        f"client key {PREFIX}c3: empty label 'zone' left out",
    ]
    view = tracker.view
    assert [(c.id, dict(c.labels)) for c in view.clients] == [
        ("c1", {"zone": "a"}),
        ("c3", {}),
        ("me", {}),
    ]
    assert view.revision == 5
    # The same faults again: no new warning; a fix then a relapse: warned again.
    assert tracker.apply([Change("put", PREFIX + "c2", b"garbage")], 6) == []
    assert tracker.apply([Change("put", PREFIX + "c2", encode_client({}))], 7) == []
    assert [c.id for c in tracker.view.clients] == ["c1", "c2", "c3", "me"]
    assert tracker.apply([Change("put", PREFIX + "c2", b"[]")], 8) == [
        f"ignoring client key {PREFIX}c2: not a JSON object (a list)"
    ]
    assert [c.id for c in tracker.view.clients] == ["c1", "c3", "me"]
    # Deleted: forgotten, so the same bad value later is news again.
    assert tracker.apply([Change("delete", PREFIX + "c2")], 9) == []
    assert tracker.apply([Change("put", PREFIX + "c2", b"[]")], 10) != []
    # A full read drops what it no longer holds.
    assert tracker.resync([], 11) == []
    assert [c.id for c in tracker.view.clients] == ["me"] and tracker.view.known


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "x/y", ""]),
            st.one_of(st.binary(max_size=40), st.from_type(dict).map(lambda d: repr(d).encode())),
            st.booleans(),
        ),
        max_size=20,
    )
)
def test_no_value_a_stranger_writes_breaks_the_view(
    writes: list[tuple[str, bytes, bool]],
) -> None:
    tracker = ClientTracker(PREFIX, Client("me"))
    for revision, (name, value, delete) in enumerate(writes, 1):
        change = Change("delete" if delete else "put", PREFIX + name, value)
        for warning in tracker.apply([change], revision):
            assert PREFIX + name in warning
        view = tracker.view
        assert any(c.id == "me" for c in view.clients)
        assert [c.id for c in view.clients] == sorted(c.id for c in view.clients)
        assert all(c.id and "/" not in c.id for c in view.clients)


def test_a_zones_callers_are_ranked_among_themselves_and_the_zones_interleave() -> None:
    clients = (Client("a1", {"zone": "a"}), Client("b1", {"zone": "b"}), Client("b2"))
    view = ClientView(Client("a2", {"zone": "a"}), clients, 1)
    assert view.place() == (1, 4)
    # a2 is second of the two a-callers; zone a is the first of two zones: place (2*1+0)/4.
    assert view.place("zone", "a") == (2, 4)
    b2 = ClientView(Client("b2", {"zone": "b"}), (*clients[:2], Client("a2", {"zone": "a"})), 1)
    assert b2.place("zone", "b") == (3, 4), "second of b's two, shifted half a step"
    assert ClientView(Client("x")).place("zone", "a")[1] == 1 << 64, "a stand-in before a view"
