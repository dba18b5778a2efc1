"""The sink base: ``add`` one record, ``flush`` what is buffered; a batching variant.

A sink knows how to put a record into one target system and nothing else: retries, the
outage gate, the delivered-memory and the receipts are the stage's job
(:mod:`agents.sinks.stage`), so a new connector is a few dozen lines.

- :class:`Sink`: ``add(delivery)`` delivers one record and returns when the target has it
  (a per-record target such as an HTTP endpoint); ``flush`` has nothing to do.
- :class:`BatchingSink`: ``add`` queues the record and returns when the batch holding it was
  written; a batch is written when ``batch_size`` records are queued or ``linger_ms`` after its
  first record. Subclasses implement only ``write(batch)``. A batch that fails for good is
  retried record by record, so one bad record cannot take its batch-mates to the DLQ.

Either way ``add`` raises a :class:`~schemas.errors.HookstreamError` on failure, whose
``retriable`` flag tells the stage whether the target is down (pause and retry) or the record is
wrong (dead letter).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from schemas.errors import HookstreamError
from schemas.events import AIResult

log = logging.getLogger(__name__)

STAGE = "sink"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One AI result on its way to one sink."""

    result: AIResult
    idempotency_key: str
    context: dict[str, Any]
    replay: str | None = None


def idempotency_key(result: AIResult, sink: str, replay: str | None = None) -> str:
    """``<source>/<event id>/<flow>/<sink>``: the same for every retry and redelivery of one
    result. A replay is a deliberate second delivery, so it gets its own key."""
    key = f"{result.event.event_key}/{result.flow}/{sink}"
    return key if replay is None else f"{key}/replay/{replay}"


def sink_context(result: AIResult) -> dict[str, Any]:
    """What sink templates may refer to: event, data, enrichment, result, steps, ai."""
    return {
        "event": result.event.model_dump(mode="json"),
        "data": result.event.data,
        "enrichment": result.enrichment,
        "result": result.output,
        "steps": result.steps,
        "ai": {"model": result.model, "provider": result.provider, "flow": result.flow},
    }


class Sink(ABC):
    """A per-record sink; also an async context manager for connectors holding connections."""

    #: what a receipt's ``status`` holds for sinks without an HTTP status
    NO_STATUS = 0

    def __init__(self, flow: str, name: str) -> None:
        self.flow = flow
        self.name = name

    @property
    def what(self) -> str:
        return f"sink {self.name}"

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.flush()

    @abstractmethod
    async def add(self, delivery: Delivery) -> int:
        """Deliver (or queue) one record; return once the target has it, with its status."""

    async def flush(self) -> None:
        """Write whatever is buffered (nothing, for a per-record sink)."""
        return


class BatchingSink(Sink):
    """A sink that writes records in batches; subclasses implement :meth:`write` only."""

    def __init__(self, flow: str, name: str, *, batch_size: int, linger_ms: int) -> None:
        super().__init__(flow, name)
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self._pending: list[tuple[Delivery, asyncio.Future[int]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_written = 0

    @abstractmethod
    async def write(self, batch: list[Delivery]) -> None:
        """Write every record of ``batch`` in one go, or raise."""

    async def add(self, delivery: Delivery) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if len(self._pending) >= self.batch_size:
            self._cut()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._cut)
        return await future

    def _cut(self) -> None:
        """Close the pending batch now (so none grows past ``batch_size``) and write it."""
        batch = self._take()
        if batch:
            task = asyncio.create_task(self._write(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[Delivery, asyncio.Future[int]]]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        return batch

    async def _write(self, batch: list[tuple[Delivery, asyncio.Future[int]]]) -> None:
        async with self._write_lock:  # batches reach the target in the order they were cut
            try:
                await self._write_settling(batch)
            except Exception as exc:
                # A bug, not a target's answer (those are HookstreamErrors): fail the records
                # loudly rather than leave their ``add`` waiting for ever.
                log.exception(
                    "%s: writing a batch of %d failed unexpectedly", self.what, len(batch)
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def flush(self) -> None:
        """Write what is pending and wait for every batch cut before."""
        batch = self._take()
        if batch:
            await self._write(batch)
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _write_settling(self, batch: list[tuple[Delivery, asyncio.Future[int]]]) -> None:
        try:
            await self.write([d for d, _ in batch])
        except HookstreamError as exc:
            if exc.retriable or len(batch) == 1:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            log.info("%s: batch of %d refused (%s); writing one by one", self.what, len(batch), exc)
            for item in batch:
                await self._write_settling([item])
            return
        self.batches_written += 1
        for _, future in batch:
            if not future.done():
                future.set_result(self.NO_STATUS)
