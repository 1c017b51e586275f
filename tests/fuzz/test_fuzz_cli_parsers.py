"""The CLI's parsers of what a user (or a script fed by someone else) types: endpoints,
splits, fallback selectors, labels, service names. Each refuses with ValueError (one line,
naming the fault) or returns something the layer below takes as it is."""

from __future__ import annotations

from fuzz_strategies import fuzzing
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.cli._config import parse_fallback, parse_split
from grpc_etcd.config import parse_config
from grpc_etcd.naming import service_prefix, validate_dotted
from grpc_etcd.registry.etcd import parse_endpoint, split_endpoints
from grpc_etcd.xds.bootstrap import parse_labels

# text made of the characters these parsers split on, and then some
parts = st.sampled_from(
    [",", "=", ":", "[", "]", "/", ".", " ", "::1", "http://", "https://", "v1", "90", "-1",
     "a", "_", "%", "\n", "\x00", "\u00e9", "\ud800", "0", "65536", "2379", "1e3", "any"]
)  # fmt: skip
typed = st.lists(parts | st.text(max_size=4), max_size=10).map("".join)


def _one_line(error: ValueError) -> None:
    message = str(error)
    assert message and "\n" not in message.replace("\\n", ""), message


@fuzzing
@given(typed)
def test_endpoints(text: str) -> None:
    try:
        endpoints = split_endpoints(text)
    except ValueError as exc:
        _one_line(exc)
        return
    for endpoint in endpoints:
        again = parse_endpoint(endpoint.address)  # what we dial parses to the same place
        assert (again.host, again.port) == (endpoint.host, endpoint.port)
        assert 0 < endpoint.port < 65536


@fuzzing
@given(typed)
def test_splits(text: str) -> None:
    try:
        to = parse_split(text)
    except ValueError as exc:
        _one_line(exc)
        return
    if any(part["weight"] > 0 for part in to):  # the command stores only what validates
        parse_config({"routes": [{"to": to}]})


@fuzzing
@given(typed)
def test_fallback_selectors(text: str) -> None:
    try:
        selectors = parse_fallback(text)
    except ValueError as exc:
        _one_line(exc)
        return
    parse_config({"fallback": selectors})


@fuzzing
@given(typed)
def test_labels(text: str) -> None:
    try:
        labels = parse_labels(text)
    except ValueError as exc:
        _one_line(exc)
        return
    assert all(isinstance(k, str) and k == k.strip() and k for k in labels)


@fuzzing
@given(typed)
def test_service_names(text: str) -> None:
    try:
        service = validate_dotted(text)
    except ValueError as exc:
        _one_line(exc)
        return
    assert service_prefix(service).endswith("/")
