"""Bounded in-flight writes: refuse fast with 503 rather than queue without bound.

Each accepted webhook holds its HTTP request open until Kafka acknowledges the write. Without a
bound, a slow or absent broker turns into thousands of open requests, growing memory and
latency for everyone. :class:`WriteGate` admits at most ``max_in_flight`` writes; beyond that,
and while the broker is known to be failing, requests get 503 + Retry-After at once. While the
broker is failing, one probe write at a time still goes through, so the first success (the
broker is back) reopens the gate without a restart.
"""

from __future__ import annotations

import logging

from streams.gateway.metrics import IN_FLIGHT_WRITES

log = logging.getLogger(__name__)


class WriteGate:
    """Admission control for Kafka writes; one event loop owns it (no locks needed)."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.broker_failing = False
        # Read when /metrics is scraped, not kept up to date on every write: a gauge's inc()
        # and dec() each take a lock, twice per webhook.
        IN_FLIGHT_WRITES.set_function(lambda: self.in_flight)

    def try_enter(self) -> bool:
        """Reserve a slot for one write; False means answer 503 now."""
        limit = 1 if self.broker_failing else self.max_in_flight
        if self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def leave(self, *, acknowledged: bool | None) -> None:
        """Release the slot; the write's outcome (None: unknown) tells whether the broker is
        taking writes."""
        self.in_flight -= 1
        if acknowledged and self.broker_failing:
            log.info("Kafka acknowledges writes again; the gateway accepts webhooks")
            self.broker_failing = False
        elif acknowledged is False and not self.broker_failing:
            log.warning("Kafka is not acknowledging writes; answering 503 until it does")
            self.broker_failing = True
