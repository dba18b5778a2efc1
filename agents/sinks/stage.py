"""The sink stage: deliver each AI result of one flow to one configured sink.

Per result, in this order (the runner acks only after ``handle`` returns):

1. decode it (not an AIResult → dead letter), skip other flows' results;
2. a replayed result (``hookstream-replay`` header) is skipped unless the sink has
   ``deliver_replays``; a delivered replay gets its own idempotency key;
3. skip it if the delivered-memory has its idempotency key (redelivery after a crash or a
   rebalance), or has it as dead-lettered and the record is not a redrive (a crash came
   between its dead letter and its ack: it is in the DLQ once already);
4. deliver it through the sink's outage gate (pause while the target is down; a permanent
   error → dead letter at once, then remembered as dead-lettered);
5. remember the delivery (``<prefix>.delivered``), then write the receipt (``<prefix>.receipts``).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from agents.emit import emit
from agents.outbound.egress_guard import NetGuard
from agents.outbound.gate import OutageGate
from agents.resources import Resources
from agents.sinks.base import Delivery, Sink, idempotency_key, sink_context
from agents.sinks.http import HttpSink
from agents.sinks.postgres import PostgresSink
from agents.sinks.slack import SlackSink
from agents.stages.base import InvalidRecord, Stage, decode
from agents.state.delivered import DEAD_LETTERED, DELIVERED, DeliveredMemory
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_sinks import HttpSinkConfig, SlackSinkConfig
from schemas.errors import HookstreamError
from schemas.events import AIResult, DeliveryReceipt
from schemas.headers import REDRIVEN_HEADER, header, replay_id

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
        self.gate = OutageGate(
            f"sink {flow}/{sink}",
            backoff_s=config.worker.retry_backoff_s,
            backoff_max_s=config.worker.retry_backoff_max_s,
        )
        self.guard = NetGuard.for_target(
            config.worker, self.sink_config.allow_private, stage=self.name
        )
        self._sink: Sink | None = None
        self.delivered = self.skipped_replays = self.skipped_delivered = 0
        self.skipped_dead_lettered = 0

    def build_sink(self) -> Sink:
        cfg = self.sink_config
        if isinstance(cfg, HttpSinkConfig):
            return HttpSink(self.flow, cfg, self.resources.session_for(self.guard), self.guard)
        if isinstance(cfg, SlackSinkConfig):
            return SlackSink(self.flow, cfg, self.resources.session_for(self.guard), self.guard)
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

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            result = decode(AIResult, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        if result.flow != self.flow:
            return
        replay = replay_id(message)
        if replay is not None and not self.sink_config.deliver_replays:
            self.skipped_replays += 1
            log.debug("sink %s: not delivering replayed %s", self.sink.name, result.event.event_key)
            return
        key = idempotency_key(result, self.sink_config.name, replay)
        redriven = header(message, REDRIVEN_HEADER) is not None
        past = await self.memory.outcome(key, fresh=redriven)
        if past == DELIVERED:
            self.skipped_delivered += 1
            log.info("sink %s: %s was delivered already; skipping", self.sink.name, key)
            return
        if past == DEAD_LETTERED and not redriven:
            self.skipped_dead_lettered += 1
            log.info("sink %s: %s is in the DLQ already; skipping", self.sink.name, key)
            return
        delivery = Delivery(result, key, sink_context(result), replay)
        sink = self.sink

        async def attempt() -> int:
            return await sink.add(delivery)

        try:
            status, attempts = await self.gate.call(
                attempt, max_attempts=self.sink_config.max_attempts
            )
        except HookstreamError as exc:
            failed = await self._fail(message, exc, extra_headers=self._headers())
            await self.memory.remember_dead_letter(
                self.resources.writer, key, type(failed).__name__
            )
            return
        receipt = DeliveryReceipt(
            flow=self.flow,
            sink=self.sink_config.name,
            event_key=result.event.event_key,
            idempotency_key=key,
            status=status,
            attempts=attempts,
        )
        encoded = dumps(receipt)
        await self.memory.remember(self.resources.writer, key, encoded)
        await emit(
            self.resources.writer,
            self.topics.receipts,
            encoded,
            key=result.event.partitionkey.encode(),
        )
        self.delivered += 1

    def _headers(self) -> list[tuple[str, bytes]]:
        return [
            ("hookstream-flow", self.flow.encode()),
            ("hookstream-sink", self.sink_config.name.encode()),
        ]
