"""Pure parts of the etcd client: endpoints, key ranges, values, error mapping, the proto."""

from __future__ import annotations

import pickle

import grpc
import grpc.aio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.errors import GrpcEtcdError
from grpc_etcd.registry.etcd import (
    AsyncEtcdClient,
    AuthError,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    KeyValue,
    Lease,
    LeaseNotFoundError,
    prefix_range_end,
)
from grpc_etcd.registry.etcd._proto import etcd_pb2 as pb
from grpc_etcd.registry.etcd._transport import (
    ErrorKind,
    classify,
    map_error,
    never_sent,
    parse_endpoints,
)


@pytest.mark.parametrize(
    ("given_", "expected", "https"),
    [
        ("127.0.0.1:2379", ("127.0.0.1:2379",), False),
        ("a:1, b:2,,", ("a:1", "b:2"), False),
        (["http://a:1/", "https://b:2"], ("a:1", "b:2"), True),
        ("localhost", ("localhost:2379",), False),
        ("[::1]:2380", ("[::1]:2380",), False),
        ("[::1]", ("[::1]:2379",), False),
        ("::1", ("[::1]:2379",), False),
        (["a:1", "a:1"], ("a:1",), False),
    ],
)
def test_parse_endpoints(given_: str | list[str], expected: tuple[str, ...], https: bool) -> None:
    assert parse_endpoints(given_) == (expected, https)


@pytest.mark.parametrize("bad", ["", " , ", [], "unix:///tmp/x", "http://"])
def test_parse_endpoints_rejects(bad: str | list[str]) -> None:
    with pytest.raises(ValueError):
        parse_endpoints(bad)


def test_client_exposes_endpoints_without_a_loop() -> None:
    c = AsyncEtcdClient("http://a:1,b")
    assert c.endpoints == ("a:1", "b:2379") and c.timeout == 5.0 and not c.closed
    assert c.current_endpoint == "a:1"
    with pytest.raises(ValueError):
        AsyncEtcdClient("a:1", timeout=0)


def test_prefix_range_end_examples() -> None:
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


@given(st.binary(min_size=1, max_size=6), st.binary(max_size=8))
def test_prefix_range_covers_exactly_the_prefix(prefix: bytes, key: bytes) -> None:
    end = prefix_range_end(prefix)
    in_range = prefix <= key and (end == b"\0" or key < end)
    assert in_range == key.startswith(prefix)


def test_lease_is_an_int_with_ttl() -> None:
    lease = Lease(42, 10)
    assert lease == 42 and lease.id == 42 and lease.ttl == 10 and isinstance(lease, int)
    assert repr(lease) == "Lease(id=42, ttl=10)"
    assert {42: 1}[lease] == 1
    again = pickle.loads(pickle.dumps(lease))
    assert again == 42 and again.ttl == 10


def test_values_are_frozen() -> None:
    kv = KeyValue(b"k", b"v", 1, 2, 1, 0)
    with pytest.raises(AttributeError):
        kv.value = b"x"  # type: ignore[misc]


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=None
    )


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", ErrorKind.TRANSIENT),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", ErrorKind.TRANSIENT),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ErrorKind.TIMEOUT),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", ErrorKind.STALE_TOKEN),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty", ErrorKind.STALE_TOKEN),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: revision of auth store is old",
            ErrorKind.STALE_TOKEN,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            ErrorKind.FATAL,
        ),
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", ErrorKind.FATAL),
    ],
)
def test_classify(code: grpc.StatusCode, details: str, kind: ErrorKind) -> None:
    assert classify(_rpc_error(code, details)) is kind


def test_never_sent() -> None:
    assert never_sent(
        _rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ...")
    )
    assert never_sent(_rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"))
    assert not never_sent(_rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out"))
    assert not never_sent(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))


@pytest.mark.parametrize(
    ("code", "details", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", LeaseNotFoundError),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
            CompactedError,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            AuthError,
        ),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", AuthError),
        (grpc.StatusCode.UNAVAILABLE, "x", EtcdUnavailableError),
        (grpc.StatusCode.INTERNAL, "x", EtcdError),
    ],
)
def test_map_error(code: grpc.StatusCode, details: str, cls: type[EtcdError]) -> None:
    err = map_error(_rpc_error(code, details), "h:1", lease_id=7)
    assert type(err) is cls
    assert isinstance(err, GrpcEtcdError) and not isinstance(err, grpc.RpcError)
    assert "h:1" in str(err) and details in str(err) and err.endpoints == ("h:1",)
    assert err.code == code.name
    if isinstance(err, LeaseNotFoundError):
        assert err.lease_id == 7


# field numbers and types copied from etcd's api/etcdserverpb/rpc.proto and api/mvccpb/kv.proto
_T = {"bytes": 12, "int64": 3, "uint64": 4, "bool": 8, "string": 9, "enum": 14, "message": 11}
EXPECTED: dict[str, dict[str, tuple[int, str]]] = {
    "KeyValue": {
        "key": (1, "bytes"), "create_revision": (2, "int64"), "mod_revision": (3, "int64"),
        "version": (4, "int64"), "value": (5, "bytes"), "lease": (6, "int64"),
    },
    "Event": {"type": (1, "enum"), "kv": (2, "message"), "prev_kv": (3, "message")},
    "ResponseHeader": {
        "cluster_id": (1, "uint64"), "member_id": (2, "uint64"), "revision": (3, "int64"),
        "raft_term": (4, "uint64"),
    },
    "RangeRequest": {
        "key": (1, "bytes"), "range_end": (2, "bytes"), "limit": (3, "int64"),
        "revision": (4, "int64"), "count_only": (9, "bool"),
    },
    "RangeResponse": {"header": (1, "message"), "kvs": (2, "message"), "count": (4, "int64")},
    "PutRequest": {"key": (1, "bytes"), "value": (2, "bytes"), "lease": (3, "int64")},
    "DeleteRangeRequest": {"key": (1, "bytes"), "range_end": (2, "bytes")},
    "DeleteRangeResponse": {"header": (1, "message"), "deleted": (2, "int64")},
    "Compare": {
        "result": (1, "enum"), "target": (2, "enum"), "key": (3, "bytes"),
        "create_revision": (5, "int64"), "range_end": (64, "bytes"),
    },
    "TxnRequest": {"compare": (1, "message"), "success": (2, "message"), "failure": (3, "message")},
    "TxnResponse": {"succeeded": (2, "bool"), "responses": (3, "message")},
    "CompactionRequest": {"revision": (1, "int64"), "physical": (2, "bool")},
    "WatchRequest": {
        "create_request": (1, "message"), "cancel_request": (2, "message"),
        "progress_request": (3, "message"),
    },
    "WatchCreateRequest": {
        "key": (1, "bytes"), "range_end": (2, "bytes"), "start_revision": (3, "int64"),
        "progress_notify": (4, "bool"), "prev_kv": (6, "bool"), "watch_id": (7, "int64"),
    },
    "WatchResponse": {
        "header": (1, "message"), "watch_id": (2, "int64"), "created": (3, "bool"),
        "canceled": (4, "bool"), "compact_revision": (5, "int64"),
        "cancel_reason": (6, "string"), "events": (11, "message"),
    },
    "LeaseGrantRequest": {"TTL": (1, "int64"), "ID": (2, "int64")},
    "LeaseGrantResponse": {"ID": (2, "int64"), "TTL": (3, "int64"), "error": (4, "string")},
    "LeaseKeepAliveResponse": {"ID": (2, "int64"), "TTL": (3, "int64")},
    "LeaseTimeToLiveResponse": {
        "ID": (2, "int64"), "TTL": (3, "int64"), "grantedTTL": (4, "int64"),
    },
    "StatusResponse": {
        "version": (2, "string"), "leader": (4, "uint64"), "raftIndex": (5, "uint64"),
        "raftTerm": (6, "uint64"), "raftAppliedIndex": (7, "uint64"),
    },
    "AuthenticateRequest": {"name": (1, "string"), "password": (2, "string")},
    "AuthenticateResponse": {"token": (2, "string")},
    # api/authpb/auth.proto and the Auth service's role and user requests
    "Permission": {"permType": (1, "enum"), "key": (2, "bytes"), "range_end": (3, "bytes")},
    "AuthStatusResponse": {"enabled": (2, "bool"), "authRevision": (3, "uint64")},
    "AuthUserGetRequest": {"name": (1, "string")},
    "AuthUserGetResponse": {"roles": (2, "string")},
    "AuthUserListResponse": {"users": (2, "string")},
    "AuthUserGrantRoleRequest": {"user": (1, "string"), "role": (2, "string")},
    "AuthUserRevokeRoleRequest": {"name": (1, "string"), "role": (2, "string")},
    "AuthRoleAddRequest": {"name": (1, "string")},
    "AuthRoleGetRequest": {"role": (1, "string")},
    "AuthRoleGetResponse": {"perm": (2, "message")},
    "AuthRoleGrantPermissionRequest": {"name": (1, "string"), "perm": (2, "message")},
    "AuthRoleRevokePermissionRequest": {
        "role": (1, "string"), "key": (2, "bytes"), "range_end": (3, "bytes"),
    },
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(EXPECTED))
def test_proto_matches_etcd(message: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    for name, (number, type_name) in EXPECTED[message].items():
        field = descriptor.fields_by_name[name]
        assert (field.number, field.type) == (number, _T[type_name]), f"{message}.{name}"


def test_proto_package_is_private() -> None:
    assert pb.DESCRIPTOR.package == "grpc_etcd_private.etcdserverpb"
    assert pb.DESCRIPTOR.name == "grpc_etcd/registry/etcd/_proto/etcd.proto"
