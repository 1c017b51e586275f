"""policies/_load.py: calls in flight per address, kept by the policy across rebuilds, and
idle addresses forgotten once many have gone (least_request's and p2c_ewma's table)."""

from __future__ import annotations

from grpc_etcd.policies import _load
from grpc_etcd.policies._load import Load, LoadTable
from grpc_etcd.policies.base import DoneInfo

OK = DoneInfo("OK", 0.001)


def test_a_call_in_flight_counts_until_its_done_callback_never_below_zero() -> None:
    load = Load()
    assert load.inflight == 0
    load.calls.append(None)
    load.calls.append(None)
    assert load.inflight == 2
    load.finish(OK)
    assert load.inflight == 1
    load.finish(OK)
    load.finish(OK)  # a done callback called twice takes nothing more
    assert load.inflight == 0


def test_the_table_makes_each_addresss_entry_once_with_its_factory() -> None:
    made: list[Load] = []

    def factory() -> Load:
        made.append(Load())
        return made[-1]

    table = LoadTable(factory)
    first = table.get("10.0.0.1:1")
    assert table.get("10.0.0.1:1") is first and len(made) == 1 and len(table) == 1
    assert table.get("10.0.0.2:1") is not first and len(table) == 2


def test_idle_addresses_are_forgotten_only_past_the_spare_entries() -> None:
    table = LoadTable()
    live = [f"10.0.0.{i}:1" for i in range(4)]
    table.keep(live)
    room = 4 * len(live) + _load._SPARE_ENTRIES  # 4 x the largest build, plus the spare
    gone = [f"10.1.{i // 256}.{i % 256}:1" for i in range(room - len(live))]
    for address in gone:
        table.get(address)
    busy = table.get(gone[0])
    busy.calls.append(None)
    for address in live:
        table.get(address)
    table.keep(live)
    assert len(table) == room, "within the room: every entry kept"
    table.get("10.2.0.0:1")
    table.keep(live)
    assert len(table) == len(live) + 1, "past it: only the live and the busy ones stay"
    assert table.get(gone[0]) is busy and busy.inflight == 1
