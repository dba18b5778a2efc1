"""The worker's stages: enrich (events → enriched) and ai (enriched → results)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.ai.openai import OpenAIChat
from agents.ai.task import AITask
from agents.emit import emit
from agents.enrich import Enricher
from agents.resources import Resources
from agents.retry import RetryPolicy, with_retries
from agents.stage_base import InvalidRecord, Stage, decode
from schemas.codec import dumps
from schemas.config import FlowConfig, HookstreamConfig
from schemas.events import CloudEvent, EnrichedEvent
from streams.errors import HookstreamError

log = logging.getLogger(__name__)


class EnrichStage(Stage):
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


class AIStage(Stage):
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
