"""The gateway's guards without a server: token buckets, client addresses, the write gate."""

from __future__ import annotations

import logging
from ipaddress import ip_network

import pytest

from schemas.config_sources import RateLimitConfig, SignatureConfig, SourceConfig
from streams.gateway.backpressure import WriteGate
from streams.gateway.client_access import IPNetwork, client_address, in_networks, parse_address
from streams.gateway.limits import RateLimiter, TokenBucket, retry_after_header
from streams.gateway.server import KafkaLogThrottle


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


# --- token bucket ---------------------------------------------------------------------------


def test_bucket_grants_the_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now_s += 0.5
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)


def test_bucket_refills_no_further_than_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=10.0, burst=2, clock=clock)
    clock.now_s += 3600
    assert [bucket.take() for _ in range(3)][2] > 0


def test_a_clock_going_backwards_grants_nothing_extra() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=1.0, burst=1, clock=clock)
    assert bucket.take() == 0.0
    clock.now_s -= 50
    assert bucket.take() > 0


@pytest.mark.parametrize(("wait_s", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30, "30")])
def test_retry_after_rounds_up_to_whole_seconds(wait_s: float, header: str) -> None:
    assert retry_after_header(wait_s) == header


def test_limiter_only_limits_sources_with_a_limit() -> None:
    clock = Clock()
    none = SignatureConfig(scheme="none")
    limited = SourceConfig(
        name="a", signature=none, rate_limit=RateLimitConfig(requests_per_s=1, burst=1)
    )
    free = SourceConfig(name="b", signature=none)
    limiter = RateLimiter([limited, free], clock=clock)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert all(limiter.take("b") == 0.0 for _ in range(100))


# --- client address ---------------------------------------------------------------------------

PROXIES: tuple[IPNetwork, ...] = (ip_network("10.0.0.0/8"), ip_network("::1/128"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7:5555 ", "192.0.2.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("unknown", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_address(text: str | None, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


def client(peer: str, header: str | None, name: str | None = "X-Forwarded-For") -> str | None:
    headers = {} if header is None else {"X-Forwarded-For": header}
    found = client_address(peer, headers, client_ip_header=name, trusted_proxies=PROXIES)
    return None if found is None else str(found)


def test_the_header_of_an_untrusted_peer_is_ignored() -> None:
    assert client("192.0.2.1", "203.0.113.5") == "192.0.2.1"


def test_a_trusted_proxy_names_the_client() -> None:
    assert client("10.1.1.1", "203.0.113.5") == "203.0.113.5"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client could have written anything left of it; the proxies appended the rest.
    assert client("10.1.1.1", "1.2.3.4, 203.0.113.5, 10.2.2.2") == "203.0.113.5"


def test_garbage_from_a_trusted_proxy_refuses_rather_than_guesses() -> None:
    assert client("10.1.1.1", "203.0.113.5, not-an-ip") is None


def test_no_header_name_configured_means_the_peer() -> None:
    assert client("10.1.1.1", "203.0.113.5", name=None) == "10.1.1.1"


def test_only_proxies_in_the_chain_gives_the_first() -> None:
    assert client("10.1.1.1", "10.9.9.9, 10.2.2.2") == "10.9.9.9"


def test_networks_of_the_other_ip_version_never_match() -> None:
    address = parse_address("10.0.0.1")
    assert address is not None
    assert not in_networks(address, (ip_network("::/0"),))
    assert in_networks(address, (ip_network("::/0"), ip_network("10.0.0.0/8")))


# --- write gate -------------------------------------------------------------------------------


def test_gate_admits_up_to_its_bound() -> None:
    gate = WriteGate(max_in_flight=2)
    assert gate.try_enter()
    assert gate.try_enter()
    assert not gate.try_enter()
    gate.leave(acknowledged=True)
    assert gate.try_enter()


def test_a_failed_write_lets_one_probe_through_until_a_success() -> None:
    gate = WriteGate(max_in_flight=100)
    assert gate.try_enter()
    gate.leave(acknowledged=False)
    assert gate.broker_failing
    assert gate.try_enter()  # the probe
    assert not gate.try_enter()
    gate.leave(acknowledged=True)
    assert not gate.broker_failing
    assert all(gate.try_enter() for _ in range(99))


def test_an_unknown_outcome_changes_nothing() -> None:
    gate = WriteGate(max_in_flight=1)
    assert gate.try_enter()
    gate.leave(acknowledged=None)
    assert not gate.broker_failing
    assert gate.in_flight == 0


# --- aiokafka's log flood while the broker is down ----------------------------------------------


def test_kafka_log_throttle_lets_each_message_through_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("streams.gateway.server.time.monotonic", lambda: now[0])
    throttle = KafkaLogThrottle(interval_s=10)

    def passes(name: str, msg: str) -> bool:
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("node 1",), None)
        return throttle.filter(record)

    assert passes("aiokafka", "Unable connect to node %s")
    assert not passes("aiokafka", "Unable connect to node %s")
    assert passes("aiokafka", "Unable to update metadata from %s")
    assert all(passes("streams.gateway.routes", "refused %s") for _ in range(3))
    now[0] += 10
    assert passes("aiokafka", "Unable connect to node %s")
