"""Outlier detection (gRFC A50 + consecutive errors), driven by a clock the test owns."""

from __future__ import annotations

import random

from grpc_etcd.config import OutlierDetection
from grpc_etcd.outlier import OutlierDetector

ADDRESSES = [f"127.0.0.1:{5000 + i}" for i in range(5)]


def detector(**settings: object) -> OutlierDetector:
    config = OutlierDetection.model_validate(
        {"interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 40, **settings}
    )
    found = OutlierDetector(config, now=0.0, rng=random.Random(7))
    found.track(ADDRESSES)
    return found


def feed(found: OutlierDetector, address: str, ok: int, failed: int, now: float = 1.0) -> None:
    for _ in range(ok):
        found.record(address, "OK", now)
    for _ in range(failed):
        found.record(address, "UNAVAILABLE", now)


def test_consecutive_errors_eject_at_once_and_a_success_resets_the_count() -> None:
    found = detector(consecutiveErrors=3)
    bad, flaky = ADDRESSES[0], ADDRESSES[1]
    assert not found.record(bad, "UNAVAILABLE", 1.0)
    assert not found.record(bad, "DEADLINE_EXCEEDED", 1.0)
    for code in ("UNAVAILABLE", "UNAVAILABLE", "OK", "UNAVAILABLE", "UNAVAILABLE"):
        assert not found.record(flaky, code, 1.0)
    assert found.record(bad, "INTERNAL", 1.0)
    assert found.ejected == {bad}


def test_application_errors_and_cancellations_are_not_failures() -> None:
    found = detector(consecutiveErrors=2)
    for code in ("NOT_FOUND", "INVALID_ARGUMENT", "CANCELLED", "PERMISSION_DENIED") * 5:
        assert not found.record(ADDRESSES[0], code, 1.0)
    assert found.ejected == frozenset()


def test_max_ejection_percent_is_never_exceeded() -> None:
    found = detector(consecutiveErrors=1, maxEjectionPercent=40)  # 40 % of 5 = 2 addresses
    ejections = [found.record(address, "UNAVAILABLE", 1.0) for address in ADDRESSES]
    assert ejections == [True, True, False, False, False]
    assert len(found.ejected) == 2
    small = detector(consecutiveErrors=1, maxEjectionPercent=10)  # 10 % of 5 < 1 address
    assert not small.record(ADDRESSES[0], "UNAVAILABLE", 1.0)


def test_ejection_time_grows_with_each_ejection_is_capped_and_decays() -> None:
    found = detector(consecutiveErrors=1, maxEjectionTime="70s")
    bad = ADDRESSES[0]
    assert found.record(bad, "UNAVAILABLE", 0.0)
    assert found.sweep(29.0) == set()
    assert found.sweep(30.0) == {bad}  # 30 s x 1
    assert found.record(bad, "UNAVAILABLE", 30.0)
    assert found.sweep(89.0) == set()
    assert found.sweep(90.0) == {bad}  # 30 s x 2
    assert found.record(bad, "UNAVAILABLE", 90.0)
    assert found.sweep(159.0) == set()
    assert found.sweep(160.0) == {bad}  # 30 s x 3 = 90, capped at 70
    for now in (170.0, 180.0, 190.0):  # three intervals out of trouble: multiplier 3 -> 0
        found.sweep(now)
    assert found.record(bad, "UNAVAILABLE", 200.0)
    assert found.sweep(229.0) == set()
    assert found.sweep(230.0) == {bad}  # back to 30 s x 1


def test_failure_percentage_ejects_the_failing_address_after_the_interval() -> None:
    found = detector(failurePercentageEjection={"threshold": 50, "requestVolume": 20})
    for address in ADDRESSES[1:]:
        feed(found, address, ok=30, failed=3)
    feed(found, ADDRESSES[0], ok=5, failed=25)
    assert found.ejected == frozenset()  # counted, but nothing happens before the interval
    assert found.sweep(10.0) == {ADDRESSES[0]}
    assert found.sweep(20.0) == set()  # the new interval has no volume: nothing changes


def test_failure_percentage_needs_minimum_hosts_and_request_volume() -> None:
    found = detector(failurePercentageEjection={"threshold": 50, "requestVolume": 20})
    feed(found, ADDRESSES[0], ok=0, failed=100)
    for address in ADDRESSES[1:4]:
        feed(found, address, ok=30, failed=0)
    feed(found, ADDRESSES[4], ok=5, failed=0)  # below requestVolume: 4 hosts < minimumHosts 5
    assert found.sweep(10.0) == set()


def test_success_rate_ejects_the_outlier_only() -> None:
    found = detector(successRateEjection={"stdevFactor": 1000, "requestVolume": 50})
    for address, failed in zip(ADDRESSES[1:], (2, 3, 1, 2), strict=True):
        feed(found, address, ok=100 - failed, failed=failed)
    feed(found, ADDRESSES[0], ok=60, failed=40)
    assert found.sweep(10.0) == {ADDRESSES[0]}


def test_enforcement_percentage_is_a_probability() -> None:
    """Seeded: with 50 % enforcement, 200 detectors eject in 100 +/- 30 cases (> 4 sigma)."""
    rng = random.Random(11)
    ejected = 0
    for _ in range(200):
        config = OutlierDetection.model_validate(
            {
                "maxEjectionPercent": 100,
                "failurePercentageEjection": {
                    "threshold": 50,
                    "enforcementPercentage": 50,
                    "minimumHosts": 1,
                    "requestVolume": 1,
                },
            }
        )
        found = OutlierDetector(config, rng=rng)
        found.track(ADDRESSES[:1])
        feed(found, ADDRESSES[0], ok=0, failed=10)
        ejected += len(found.sweep(10.0))
    assert 70 <= ejected <= 130


def test_track_forgets_gone_addresses_and_they_count_no_more() -> None:
    found = detector(consecutiveErrors=1, maxEjectionPercent=50)
    assert found.record(ADDRESSES[0], "UNAVAILABLE", 1.0)
    found.track(ADDRESSES[1:])
    assert found.ejected == frozenset()
    assert not found.record(ADDRESSES[0], "UNAVAILABLE", 1.0)  # unknown address: ignored


def test_configure_restarts_counters() -> None:
    found = detector(consecutiveErrors=2)
    found.record(ADDRESSES[0], "UNAVAILABLE", 1.0)
    found.configure(found.config.model_copy(update={"interval": 5.0}), now=2.0)
    assert found.next_sweep == 7.0
    assert not found.record(ADDRESSES[0], "UNAVAILABLE", 3.0)
    assert found.record(ADDRESSES[0], "UNAVAILABLE", 3.0)


def test_no_address_no_ejection() -> None:
    config = {"successRateEjection": {"minimumHosts": 0}, "failurePercentageEjection": {}}
    found = OutlierDetector(OutlierDetection.model_validate(config))
    assert found.sweep(10.0) == set()
