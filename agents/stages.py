"""The three stage handlers: what happens to one record in enrich, ai and sink.

Each handler takes one Faust event (raw bytes in), does its stage's work with retries, and
either writes its output or dead-letters the record; it returns only when one of the two is
on Kafka, which is when :class:`agents.runner.OrderedRunner` may ack it. A record that is not
valid JSON for its topic's model is dead-lettered too: bad input never stops a partition.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from agents.ai.openai import OpenAIChat
from agents.ai.task import AITask
from agents.emit import dead_letter, emit
from agents.enrich import Enricher
from agents.resources import Resources
from agents.retry import RetriesExhausted, RetryPolicy, with_retries
from agents.sinks.http import HttpSink
from schemas.codec import dumps
from schemas.config import FlowConfig, HookstreamConfig
from schemas.events import AIResult, CloudEvent, EnrichedEvent
from streams.errors import HookstreamError, StageError
from streams.topics import Topics

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class InvalidRecord(StageError):
    """A record on a hookstream topic is not what that topic holds; never retriable."""


def decode(model: type[M], raw: bytes | None, *, stage: str) -> M:
    try:
        return model.model_validate(orjson.loads(raw or b""))
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}", stage=stage) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(value)"
        raise InvalidRecord(
            f"value is not a {model.__name__}: {where}: {first['msg']}", stage=stage
        ) from None


class _Stage:
    name = ""

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        self.config = config
        self.resources = resources
        self.topics = Topics(config.kafka.topic_prefix)

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> None:
        if isinstance(error, RetriesExhausted):
            await dead_letter(
                self.resources.writer,
                self.topics.dlq,
                message,
                stage=self.name,
                error=error.last,
                attempts=error.attempts,
                first_failure_at=error.first_failure_at,
                last_failure_at=error.last_failure_at,
                extra_headers=extra_headers,
            )
        else:
            await dead_letter(
                self.resources.writer,
                self.topics.dlq,
                message,
                stage=self.name,
                error=error,
                attempts=1,
                extra_headers=extra_headers,
            )


class EnrichStage(_Stage):
    name = "enrich"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self.policy = RetryPolicy(
            max_attempts=3,
            backoff_s=config.worker.retry_backoff_s,
            backoff_max_s=config.worker.retry_backoff_max_s,
        )

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            cloud_event = decode(CloudEvent, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        flows = self.config.flows_for(cloud_event.source, cloud_event.type)
        if not flows:
            log.debug("no flow matches %s %s", cloud_event.source, cloud_event.type)
            return
        enricher = Enricher(self.config, self.resources.session)
        for flow in flows:

            async def attempt(_: int, flow: FlowConfig = flow) -> EnrichedEvent:
                return await enricher.enrich_for(flow, cloud_event)

            try:
                enriched, _ = await with_retries(
                    attempt, self.policy, what=f"flow {flow.name} enrichment"
                )
            except HookstreamError as exc:
                flow_header = [("hookstream-flow", flow.name.encode())]
                await self._fail(message, exc, extra_headers=flow_header)
                continue
            await emit(
                self.resources.writer,
                self.topics.enriched,
                dumps(enriched),
                key=cloud_event.partitionkey.encode(),
            )


class AIStage(_Stage):
    name = "ai"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self._limits = {
            flow.name: asyncio.Semaphore(flow.ai.max_concurrency) for flow in config.flows
        }
        self._tasks = {
            flow.name: AITask(flow, config.provider(flow.ai.provider), config.worker)
            for flow in config.flows
        }

    @property
    def max_in_flight(self) -> int:
        return max(1, sum(flow.ai.max_concurrency for flow in self.config.flows))

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            enriched = decode(EnrichedEvent, message.value, stage=self.name)
            if enriched.flow not in self._limits:
                raise InvalidRecord(
                    f"no flow named {enriched.flow!r} is configured", stage=self.name
                )
            async with self._limits[enriched.flow]:
                task = self._tasks[enriched.flow]
                client = OpenAIChat(task.provider, self.resources.session)
                result = await task.run(enriched, client)
        except HookstreamError as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        await emit(
            self.resources.writer,
            self.topics.results,
            dumps(result),
            key=enriched.event.partitionkey.encode(),
        )


class SinkStage(_Stage):
    """One configured sink of one flow; the sink worker runs one of these per sink."""

    name = "sink"

    def __init__(
        self, config: HookstreamConfig, resources: Resources, flow: str, sink: str
    ) -> None:
        super().__init__(config, resources)
        self.flow = flow
        self.sink_config = next(s for s in config.flow(flow).sinks if s.name == sink)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            result = decode(AIResult, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        if result.flow != self.flow:
            return
        sink = HttpSink(self.flow, self.sink_config, self.resources.session, self.config.worker)
        try:
            receipt = await sink.deliver(result)
        except HookstreamError as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        await emit(
            self.resources.writer,
            self.topics.receipts,
            dumps(receipt),
            key=result.event.partitionkey.encode(),
        )

    def _headers(self) -> list[tuple[str, bytes]]:
        return [
            ("hookstream-flow", self.flow.encode()),
            ("hookstream-sink", self.sink_config.name.encode()),
        ]
