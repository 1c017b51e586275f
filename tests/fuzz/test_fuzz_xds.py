"""The xDS translation of any valid document over any nodes etcd may hold, asked for by any
client: it never raises, every cluster a route sends calls to exists with its endpoints, and a
made-up resource name gets nothing (None) rather than an error."""

from __future__ import annotations

from typing import Any

from fuzz_strategies import fuzzing, texts, valid, valid_documents
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.snapshot import Snapshot
from grpc_etcd.xds.names import service_of
from grpc_etcd.xds.translate import (
    CACHE_LIMIT,
    CDS,
    EDS,
    LDS,
    RDS,
    ServiceState,
    Translation,
)

SERVICE = "fz.srv.app"
TYPES = [LDS, RDS, CDS, EDS]

label_values = st.sampled_from(["v1", "v2", "v3", "a", "b", "stable", ""])
addresses = st.one_of(
    st.integers(1, 65535).map(lambda port: f"127.0.0.1:{port}"),
    st.integers(1, 3).map(lambda port: f"[::1]:{port}"),
    st.sampled_from(["h:1", "garbage", "127.0.0.1", ":80", "[::1]", "a:b:c", "h:0", "h:99999"]),
)


@st.composite
def nodes(draw: Any, index: int) -> Node:
    metadata = draw(
        st.dictionaries(
            st.sampled_from(["zone", "tier", "weight"]),
            st.sampled_from(["a", "b", "0", "1", "7", "-1", "x", ""]),
            max_size=3,
        )
    )
    methods = draw(
        st.dictionaries(
            st.sampled_from(["ApiTest", "/proto.Api/ApiTest", "Other"]),
            st.builds(MethodInfo, online=st.booleans()),
            max_size=2,
        )
    )
    return Node(
        SERVICE,
        f"app-{index}",
        draw(addresses),
        draw(label_values),
        metadata,
        methods,
        key=f"/fz/srv/app/app-{index}",
        online=draw(st.booleans()),
    )


snapshots = st.integers(0, 6).flatmap(
    lambda count: st.tuples(*(nodes(i) for i in range(count))).map(
        lambda made: Snapshot(SERVICE, {node.key: node for node in made}, 7)
    )
)
sources = st.dictionaries(st.sampled_from(["version", "zone", "tier", "service"]), label_values)
names = st.one_of(
    st.just(SERVICE),
    texts,
    st.builds(lambda sel, rest: f"{SERVICE}|{sel}{rest}", texts, st.sampled_from(["", "!x"])),
    st.sampled_from(
        [f"{SERVICE}|*", f"{SERVICE}|unknown-version", f"{SERVICE}|version=v1",
         f"{SERVICE}|version=v1,version=v2", f"{SERVICE}|=", f"{SERVICE}|%zz=1", "|", ""]
    ),
)  # fmt: skip


@fuzzing
@given(valid_documents, snapshots, sources)
def test_any_valid_document_translates(
    document: dict[str, Any], snapshot: Snapshot, source: dict[str, str]
) -> None:
    translation = Translation(ServiceState.of(snapshot, valid(document)))
    resources = translation.resources(source)
    assert set(resources[LDS]) == set(resources[RDS]) == {SERVICE}
    assert set(resources[CDS]) == set(resources[EDS])  # every cluster routed to, with endpoints
    for type_url, named in resources.items():
        for name in named:
            assert translation.serialized(type_url, name, source) is not None
    assert all(isinstance(warning, str) for warning in translation.warnings)


@fuzzing
@given(snapshots, sources, st.lists(st.tuples(st.sampled_from(TYPES), names), max_size=8))
def test_any_name_a_client_asks_for(
    snapshot: Snapshot, source: dict[str, str], asked: list[tuple[str, str]]
) -> None:
    translation = Translation(ServiceState.of(snapshot))
    for type_url, name in asked:
        answer = translation.serialized(type_url, name, source)
        assert answer is None or isinstance(answer, bytes)
        if service_of(name) != SERVICE:
            assert answer is None


def test_made_up_names_do_not_grow_memory() -> None:
    """Found reading what fuzzing asked for: every distinct name a client asked for was kept
    (answer and node subset) until the next change in etcd."""
    node = Node(SERVICE, "a", "127.0.0.1:1", "v1", key="/fz/srv/app/a")
    translation = Translation(ServiceState.of(Snapshot(SERVICE, {node.key: node}, 1)))
    for i in range(CACHE_LIMIT + 500):
        for type_url in (CDS, EDS):
            assert translation.serialized(type_url, f"{SERVICE}|zone=z{i}", {}) is not None
    assert len(translation._serialized) <= CACHE_LIMIT
    assert len(translation._selected) <= CACHE_LIMIT
    known = translation.serialized(CDS, f"{SERVICE}|version=v1", {})
    assert known == translation.serialized(CDS, f"{SERVICE}|version=v1", {})
