"""``hookstream replay``: re-inject a window of a topic into the pipeline, marked as a replay.

The window (``--from``/``--to``, offsets or times; see :mod:`streams.kafkaread`) is fixed at
start. Each selected record is written again to the same topic and partition, with its key,
value and headers, plus ``hookstream-replay: <replay id>`` (:mod:`agents.markers`): the stages
carry that header from events to enriched to results, the AI stage may answer from its cache,
and each sink decides by its ``deliver_replays`` whether replayed results reach it.

Filters (``--source``, ``--type``, ``--flow``) read the value: a CloudEvent on the events topic
(``--flow`` selects the events that flow matches), ``{flow, event, …}`` on enriched and results.
Without filters records are copied without being parsed.

Replaying the events or enriched topic calls the model again for every result not in the cache:
:meth:`Replayer.estimate` counts the calls and tokens that may cost (prompt characters / 4 plus
the flow's ``max_tokens``, an upper bound) so the CLI can ask before it starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from agents.markers import REPLAY_HEADER
from schemas import templates
from schemas.config import FlowConfig, HookstreamConfig
from streams import topics as catalogue
from streams.errors import BrokerUnavailable, TemplateError
from streams.kafkaread import Position, Window, new_consumer, read_window, window

Progress = Callable[[int, int], None]
_PENDING_MAX = 20_000  # sends in flight before the replay waits for their acks


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    source: str | None = None
    type: str | None = None
    flow: str | None = None

    @property
    def empty(self) -> bool:
        return self.source is None and self.type is None and self.flow is None


@dataclass
class ModelEstimate:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_flow: dict[str, int] = field(default_factory=dict)


@dataclass
class ReplayStats:
    replay_id: str
    window: int = 0
    read: int = 0
    replayed: int = 0
    filtered_out: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.replayed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _event_of(role: str, value: dict[str, Any]) -> dict[str, Any]:
    event = value if role == catalogue.EVENTS else value.get("event")
    return event if isinstance(event, dict) else {}


class Replayer:
    def __init__(
        self,
        config: HookstreamConfig,
        topic: str,
        *,
        start: Position | None,
        end: Position | None,
        selection: ReplayFilter | None = None,
        replay_id: str | None = None,
    ) -> None:
        self.config = config
        self.topic = topic
        self.start = start
        self.end = end
        self.selection = selection or ReplayFilter()
        self.replay_id = replay_id or uuid.uuid4().hex[:12]
        prefix = config.kafka.topic_prefix + "."
        self.role = topic.removeprefix(prefix) if topic.startswith(prefix) else ""
        self._window: Window | None = None

    @property
    def calls_model(self) -> bool:
        """Does a replay of this topic reach the AI stage?"""
        return self.role in (catalogue.EVENTS, catalogue.ENRICHED)

    def _flows(self, value: dict[str, Any]) -> list[FlowConfig]:
        if self.role == catalogue.ENRICHED:
            name = value.get("flow")
            return [f for f in self.config.flows if f.name == name]
        event = _event_of(self.role, value)
        return self.config.flows_for(str(event.get("source", "")), str(event.get("type", "")))

    def selects(self, value: dict[str, Any]) -> bool:
        sel = self.selection
        event = _event_of(self.role, value)
        if sel.source is not None and event.get("source") != sel.source:
            return False
        if sel.type is not None and event.get("type") != sel.type:
            return False
        if sel.flow is None:
            return True
        if self.role == catalogue.EVENTS:
            return any(f.name == sel.flow for f in self._flows(value))
        return value.get("flow") == sel.flow

    def _estimate_one(self, value: dict[str, Any], estimate: ModelEstimate) -> None:
        event = _event_of(self.role, value)
        context = {
            "event": event,
            "data": event.get("data"),
            "enrichment": value.get("enrichment") or {},
        }
        for flow in self._flows(value):
            try:
                prompt = templates.render_text(templates.parse(flow.ai.prompt), context)
            except TemplateError:  # enrichment not known yet: the payload's size stands in
                prompt = orjson.dumps(event.get("data")).decode()
            estimate.calls += 1
            estimate.by_flow[flow.name] = estimate.by_flow.get(flow.name, 0) + 1
            estimate.prompt_tokens += (len(flow.ai.system) + len(prompt)) // 4 + 1
            estimate.completion_tokens += flow.ai.max_tokens

    async def _fixed_window(self, consumer: Any) -> Window:
        if self._window is None:
            self._window = await window(consumer, self.topic, self.start, self.end)
        return self._window

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    async def estimate(self) -> tuple[int, ModelEstimate]:
        """(records selected, model calls and tokens) — a read-only pass over the window."""
        consumer = new_consumer(self.config.kafka.bootstrap_servers)
        estimate, selected = ModelEstimate(), 0
        try:
            await consumer.start()
            win = await self._fixed_window(consumer)
            async for batch in read_window(consumer, win):
                for record in batch:
                    value = self._decode(record)
                    if self.selection.empty or self.selects(value):
                        selected += 1
                        if self.calls_model:
                            self._estimate_one(value, estimate)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
        finally:
            await consumer.stop()
        return selected, estimate

    async def run(
        self, progress: Progress | None = None, estimate: ModelEstimate | None = None
    ) -> ReplayStats:
        """Re-inject the window; returns once every replayed record is acknowledged (acks=all).

        With ``estimate``, the model estimate is counted on the way (for ``--yes`` runs)."""
        stats = ReplayStats(self.replay_id)
        settings = self.config.kafka
        consumer = new_consumer(
            settings.bootstrap_servers, max_partition_fetch_bytes=8 * 1024 * 1024
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"hookstream-replay-{self.replay_id}",
            acks="all",
            enable_idempotence=True,
            linger_ms=max(settings.linger_ms, 20),
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        marker = (REPLAY_HEADER, self.replay_id.encode())
        started = time.monotonic()
        try:
            await consumer.start()
            await producer.start()
            win = await self._fixed_window(consumer)
            stats.window = win.size
            pending: list[Any] = []
            parse = not self.selection.empty or estimate is not None
            async for batch in read_window(consumer, win):
                for record in batch:
                    stats.read += 1
                    if parse:
                        value = self._decode(record)
                        if not self.selection.empty and not self.selects(value):
                            stats.filtered_out += 1
                            continue
                        if estimate is not None and self.calls_model:
                            self._estimate_one(value, estimate)
                    headers = [(k, v) for k, v in record.headers if k != REPLAY_HEADER]
                    headers.append(marker)
                    pending.append(
                        await producer.send(
                            self.topic,
                            value=record.value,
                            key=record.key,
                            partition=record.partition,
                            headers=headers,
                        )
                    )
                    stats.replayed += 1
                if len(pending) >= _PENDING_MAX:
                    for future in pending:
                        await future
                    pending.clear()
                if progress is not None:
                    progress(stats.read, stats.window)
            for future in pending:
                await future
        except KafkaError as exc:
            raise BrokerUnavailable(f"replay of {self.topic} failed: {exc}") from exc
        finally:
            await producer.stop()
            await consumer.stop()
        stats.elapsed_s = time.monotonic() - started
        if progress is not None:
            progress(stats.read, stats.window)
        return stats
