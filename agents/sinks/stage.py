"""The sink stage: deliver each AI result of one flow to one configured sink.

Per result, in this order (the runner acks only after ``handle`` returns):

1. decode it (not an AIResult → dead letter), skip other flows' results;
2. a replayed result (``hookstream-replay`` header) is skipped unless the sink has
   ``deliver_replays``; a delivered replay gets its own idempotency key; a result for which
   the sink's ``when`` is false is skipped too, with a receipt saying so (outcome
   skipped_when);
3. skip it if the delivered-memory has its idempotency key (redelivery after a crash or a
   rebalance), or has it as dead-lettered and the record is not a redrive (a crash came
   between its dead letter and its ack: it is in the DLQ once already);
4. deliver it through the sink's outage gate (pause while the target is down; a permanent
   error → dead letter at once, then remembered as dead-lettered);
5. remember the delivery (``<prefix>.delivered``) and write the receipt (``<prefix>.receipts``),
   both handed to the producer at once and both acknowledged before the result is acked.

It runs in the result's trace (:func:`agents.stages.base.traced`): with spans on, a ``process``
span per result of its flow and a ``deliver <sink>`` span (kind client) per attempt, whose
context is the ``traceparent`` of an HTTP or Slack sink's request; the receipt and a dead letter
carry the context too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from agents import metrics
from agents.emit import Record, emit
from agents.outbound.egress_guard import NetGuard
from agents.outbound.gate import OutageGate
from agents.resources import Resources
from agents.sinks.base import Delivery, Sink, idempotency_key, sink_context
from agents.sinks.http import HttpSink
from agents.sinks.slack import SlackSink
from agents.stages.base import InvalidRecord, Stage, decode, traced
from agents.state.delivered import DEAD_LETTERED, DELIVERED, DeliveredMemory
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_sinks import HttpSinkConfig, SlackSinkConfig
from schemas.errors import HookstreamError
from schemas.events import AIResult, DeliveryReceipt
from schemas.headers import REDRIVEN_HEADER, header, replay_id, trace_headers
from streams.metrics import tracing

log = logging.getLogger(__name__)


class SinkStage(Stage):
    """One configured sink of one flow; the sink worker runs one of these per sink."""

    name = "sink"

    def __init__(
        self,
        config: HookstreamConfig,
        resources: Resources,
        memory: DeliveredMemory,
        flow: str,
        sink: str,
    ) -> None:
        super().__init__(config, resources)
        self.memory = memory
        self.flow = flow
        self.sink_config = next(s for s in config.flow(flow).sinks if s.name == sink)
        paused = metrics.SINK_PAUSED.labels(flow, sink)
        paused.set(0)

        def on_pause(cause: str) -> None:
            paused.set(1)
            metrics.SINK_PAUSES.labels(flow, sink, cause).inc()

        self.gate = OutageGate(
            f"sink {flow}/{sink}",
            backoff_s=config.worker.retry_backoff_s,
            backoff_max_s=config.worker.retry_backoff_max_s,
            on_pause=on_pause,
            on_resume=lambda _paused_s: paused.set(0),
        )
        self._outcomes = {
            outcome: metrics.SINK_DELIVERIES.labels(flow, sink, outcome)
            for outcome in (
                "delivered",
                "duplicate",
                "dead_lettered",
                "dead_lettered_before",
                "replay_skipped",
                "skipped_when",
            )
        }
        self._retries = metrics.SINK_RETRIES.labels(flow, sink)
        self._delivery_seconds = metrics.SINK_DELIVERY_SECONDS.labels(flow, sink)
        self._end_to_end_seconds = metrics.END_TO_END_SECONDS.labels(flow, sink)
        self.guard = NetGuard.for_target(
            config.worker, self.sink_config.allow_private, stage=self.name
        )
        self._sink: Sink | None = None
        # None without a ``when``: no call per result. Reading the config's private condition
        # goes through pydantic's __getattr__, ~5 % of the sink worker's CPU (issue 16).
        self._when_holds = (
            self.sink_config.when_holds if self.sink_config.when is not None else None
        )
        self.delivered = self.skipped_replays = self.skipped_delivered = 0
        self.skipped_dead_lettered = self.skipped_when = 0

    def busy(self, task: asyncio.Task[Any]) -> bool:
        """Must this delivery's task finish before a rebalance or a stop goes on?

        Only one held at the closed outage gate need not (``OutageGate.waiting``): it has sent
        nothing, so the runner's release lets it go unacked, to be delivered by whoever reads
        its partition next. Every other one may be sending, or remembering what it sent. The
        probe is busy while it sends; if it fails it waits at the gate again, and the next
        release (repeated while Faust waits, :mod:`agents.faust_app`) lets it go too.
        """
        return task not in self.gate.waiting

    def build_sink(self) -> Sink:
        cfg = self.sink_config
        if isinstance(cfg, HttpSinkConfig):
            return HttpSink(self.flow, cfg, self.resources.session_for(self.guard), self.guard)
        if isinstance(cfg, SlackSinkConfig):
            return SlackSink(self.flow, cfg, self.resources.session_for(self.guard), self.guard)
        # Imported here: asyncpg is paid for by a sink worker with a PostgreSQL sink only.
        from agents.sinks.postgres import PostgresSink

        return PostgresSink(self.flow, cfg)

    async def __aenter__(self) -> SinkStage:
        sink = self.build_sink()
        await sink.__aenter__()
        self._sink = sink
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            await sink.__aexit__(exc_type, exc, tb)

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("SinkStage used outside `async with`")
        return self._sink

    def span_attributes(self) -> dict[str, str]:
        return {
            "hookstream.stage": self.name,
            "hookstream.flow": self.flow,
            "hookstream.sink": self.sink_config.name,
        }

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            result = decode(AIResult, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        if result.flow != self.flow:
            return  # another sink's (each reads every result): no span for it
        await self._handle_result(event, result)

    @traced
    async def _handle_result(self, event: Any, result: AIResult) -> None:
        message = event.message
        if tracing.enabled():
            tracing.set_attributes({"hookstream.event_id": result.event.id})
        replay = replay_id(message)
        if replay is not None and not self.sink_config.deliver_replays:
            self.skipped_replays += 1
            self._outcomes["replay_skipped"].inc()
            log.debug("sink %s: not delivering replayed %s", self.sink.name, result.event.event_key)
            return
        key = idempotency_key(result, self.sink_config.name, replay)
        context = sink_context(result)
        if self._when_holds is not None and not self._when_holds(context):
            await self._skip_when(message, result, key)
            return
        redriven = header(message, REDRIVEN_HEADER) is not None
        past = await self.memory.outcome(key, fresh=redriven)
        if past == DELIVERED:
            self.skipped_delivered += 1
            self._outcomes["duplicate"].inc()
            log.info("sink %s: %s was delivered already; skipping", self.sink.name, key)
            return
        if past == DEAD_LETTERED and not redriven:
            self.skipped_dead_lettered += 1
            self._outcomes["dead_lettered_before"].inc()
            log.info("sink %s: %s is in the DLQ already; skipping", self.sink.name, key)
            return
        delivery = Delivery(result, key, context, replay)
        sink = self.sink
        tries = 0

        async def attempt() -> int:
            nonlocal tries
            tries += 1
            if tries > 1:
                self._retries.inc()
            started_s = time.perf_counter()
            if tracing.enabled():
                with tracing.span(
                    f"deliver {sink.name}", kind="client", attributes=self._span_attributes(tries)
                ):
                    status = await sink.add(delivery)
            else:
                status = await sink.add(delivery)
            self._delivery_seconds.observe(time.perf_counter() - started_s)
            return status

        try:
            status, attempts = await self.gate.call(
                attempt, max_attempts=self.sink_config.max_attempts
            )
        except HookstreamError as exc:
            failed = await self._fail(message, exc, extra_headers=self._headers())
            await self.memory.remember_dead_letter(
                self.resources.writer, key, type(failed).__name__
            )
            self._outcomes["dead_lettered"].inc()
            return
        if replay is None and not redriven:
            self._end_to_end_seconds.observe(_since_s(result.event.time))
        receipt = DeliveryReceipt(
            flow=self.flow,
            sink=self.sink_config.name,
            event_key=result.event.event_key,
            idempotency_key=key,
            status=status,
            attempts=attempts,
        )
        encoded = dumps(receipt)
        await self.memory.remember(
            self.resources.writer,
            key,
            encoded,
            Record(
                self.topics.receipts,
                encoded,
                result.event.partitionkey.encode(),
                trace_headers(message),
            ),
        )
        self.delivered += 1
        self._outcomes["delivered"].inc()

    async def _skip_when(self, message: Any, result: AIResult, key: str) -> None:
        """The sink's ``when`` is false for this result: nothing is sent, and a receipt with
        outcome skipped_when says so (``hookstream trace`` shows it as "skipped (when)").
        Nothing goes to the delivered-memory: ``when`` gives the same answer for the same
        result, so a redelivery skips again (and writes a second such receipt)."""
        self.skipped_when += 1
        self._outcomes["skipped_when"].inc()
        log.debug("sink %s: when is false for %s; not delivering", self.sink.name, key)
        receipt = DeliveryReceipt(
            flow=self.flow,
            sink=self.sink_config.name,
            event_key=result.event.event_key,
            idempotency_key=key,
            status=Sink.NO_STATUS,
            attempts=0,
            outcome="skipped_when",
        )
        await emit(
            self.resources.writer,
            self.topics.receipts,
            dumps(receipt),
            key=result.event.partitionkey.encode(),
            headers=trace_headers(message),
        )

    def _span_attributes(self, attempt: int) -> dict[str, str | int]:
        return {
            **self.span_attributes(),
            "hookstream.sink_kind": self.sink_config.kind,
            "hookstream.attempt": attempt,
        }

    def _headers(self) -> list[tuple[str, bytes]]:
        return [
            ("hookstream-flow", self.flow.encode()),
            ("hookstream-sink", self.sink_config.name.encode()),
        ]


def _since_s(received_at: datetime) -> float:
    """Seconds from ``received_at`` (a CloudEvent's time; naive means UTC) until now; a time a
    little ahead of this host's clock (another host's) counts as 0."""
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - received_at).total_seconds(), 0.0)
