"""The sink base: idempotency keys, the template context, and the batching variant (size,
linger, flush on exit, a permanently failing batch retried record by record)."""

from __future__ import annotations

import asyncio

import pytest

from agents.sinks.base import BatchingSink, Delivery, Sink, idempotency_key, sink_context
from schemas.errors import PermanentRemoteError, RetriableRemoteError
from schemas.events import AIResult, TokenUsage
from streams.client import make_event


def _result(n: int) -> AIResult:
    event = make_event(
        {"customer_id": f"cus_{n}", "message": f"m{n}"},
        source="helpdesk",
        type="ticket.created",
        key=f"cus_{n}",
        id=f"evt-{n}",
    )
    return AIResult(
        flow="triage",
        event=event,
        enrichment={"customer": {"plan": "pro"}},
        provider="default",
        model="sim-1",
        output={"sentiment": "positive"},
        usage=TokenUsage(),
        latency_ms=1.0,
        attempts=1,
    )


def _delivery(n: int) -> Delivery:
    result = _result(n)
    key = idempotency_key(result, "warehouse")
    return Delivery(result, key, sink_context(result))


class Recording(BatchingSink):
    """Writes into a list; refuses a batch holding a record whose event id is in ``bad``."""

    def __init__(self, *, batch_size: int = 3, linger_ms: int = 20) -> None:
        super().__init__("triage", "warehouse", batch_size=batch_size, linger_ms=linger_ms)
        self.writes: list[list[str]] = []
        self.written: list[str] = []
        self.bad: set[str] = set()
        self.down = False

    async def write(self, batch: list[Delivery]) -> None:
        ids = [d.result.event.id for d in batch]
        self.writes.append(ids)
        await asyncio.sleep(0)
        if self.down:
            raise RetriableRemoteError("database down", stage="sink")
        refused = self.bad.intersection(ids)
        if refused:
            raise PermanentRemoteError(f"bad rows {sorted(refused)}", stage="sink")
        self.written += ids


def test_idempotency_key_is_stable_and_replays_get_their_own() -> None:
    result = _result(1)
    assert idempotency_key(result, "crm") == "helpdesk/evt-1/triage/crm"
    assert idempotency_key(result, "crm") == idempotency_key(_result(1), "crm")
    assert idempotency_key(result, "crm", "r1") == "helpdesk/evt-1/triage/crm/replay/r1"
    assert idempotency_key(result, "crm", "r1") != idempotency_key(result, "crm", "r2")


def test_sink_context_names_what_templates_may_use() -> None:
    context = sink_context(_result(2))
    assert set(context) == {"event", "data", "enrichment", "result", "steps", "ai"}
    assert context["steps"] == {}
    assert context["data"]["customer_id"] == "cus_2"
    assert context["result"] == {"sentiment": "positive"}
    assert context["ai"] == {"model": "sim-1", "provider": "default", "flow": "triage"}
    assert context["event"]["id"] == "evt-2"


async def test_a_full_batch_is_written_at_once() -> None:
    sink = Recording(batch_size=3, linger_ms=60_000)
    statuses = await asyncio.gather(*(sink.add(_delivery(n)) for n in range(3)))
    assert statuses == [Sink.NO_STATUS] * 3
    assert sink.writes == [["evt-0", "evt-1", "evt-2"]]
    assert sink.batches_written == 1


async def test_a_partial_batch_is_written_after_linger() -> None:
    sink = Recording(batch_size=100, linger_ms=10)
    assert await asyncio.wait_for(sink.add(_delivery(1)), 5) == Sink.NO_STATUS
    assert sink.writes == [["evt-1"]]


async def test_batches_keep_their_order() -> None:
    sink = Recording(batch_size=2, linger_ms=10)
    await asyncio.gather(*(sink.add(_delivery(n)) for n in range(5)))
    assert sink.written == [f"evt-{n}" for n in range(5)]
    assert [len(w) for w in sink.writes] == [2, 2, 1]


async def test_a_permanently_refused_batch_is_retried_record_by_record() -> None:
    sink = Recording(batch_size=3, linger_ms=60_000)
    sink.bad = {"evt-1"}
    outcomes = await asyncio.gather(
        *(sink.add(_delivery(n)) for n in range(3)), return_exceptions=True
    )
    assert outcomes[0] == outcomes[2] == Sink.NO_STATUS
    assert isinstance(outcomes[1], PermanentRemoteError)
    # The batch, then one record at a time: only the bad one fails.
    assert sink.writes == [["evt-0", "evt-1", "evt-2"], ["evt-0"], ["evt-1"], ["evt-2"]]
    assert sink.written == ["evt-0", "evt-2"]


async def test_a_retriable_failure_fails_the_whole_batch() -> None:
    """Target down: every record of the batch gets the error (the gate pauses the sink), and
    the batch is not split into one write per record."""
    sink = Recording(batch_size=3, linger_ms=60_000)
    sink.down = True
    outcomes = await asyncio.gather(
        *(sink.add(_delivery(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, RetriableRemoteError) for o in outcomes)
    assert sink.writes == [["evt-0", "evt-1", "evt-2"]]


async def test_leaving_the_context_flushes_what_is_buffered() -> None:
    sink = Recording(batch_size=100, linger_ms=60_000)
    async with sink:
        pending = asyncio.create_task(sink.add(_delivery(7)))
        await asyncio.sleep(0)
        assert sink.writes == []
    assert await pending == Sink.NO_STATUS
    assert sink.writes == [["evt-7"]]


async def test_flush_with_nothing_buffered_writes_nothing() -> None:
    sink = Recording()
    await sink.flush()
    assert sink.writes == []


@pytest.mark.parametrize("batch_size", [1, 4])
async def test_single_record_permanent_failure_is_raised_once(batch_size: int) -> None:
    sink = Recording(batch_size=batch_size, linger_ms=5)
    sink.bad = {"evt-9"}
    with pytest.raises(PermanentRemoteError):
        await sink.add(_delivery(9))
    assert sink.writes == [["evt-9"]]


async def test_an_unexpected_error_fails_the_records_instead_of_hanging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Recording):
        async def write(self, batch: list[Delivery]) -> None:
            raise KeyError("bug")

    sink = Broken(batch_size=2, linger_ms=60_000)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(sink.add(_delivery(n)) for n in range(2)), return_exceptions=True), 5
    )
    assert all(isinstance(o, KeyError) for o in outcomes)
    assert "failed unexpectedly" in caplog.text
