"""The enrich stage: events → enriched, one record per matching flow.

Its dedupe is the first of the worker's two (the other is the AI stage's,
:mod:`agents.stages.ai`), both backed by the worker's durable dedupe map
(:mod:`agents.state.durable_map`): enrich remembers each event id (``seen/<source>/<id>``) once
its enriched records are on Kafka. A sender's retry of the same delivery, whichever gateway
took it, carries the same id and the same partition key, so it reaches the same partition after
the original and is dropped.

A replayed record (``hookstream-replay: <replay id>``, :mod:`schemas.headers`) gets markers of
its own, ``…/replay/<replay id>``, in both stages, rather than skipping dedupe. Its live markers
are set — the event was processed — so plain keys would drop every replayed event; skipping
dedupe for replays would instead lose dedupe *inside* a replay (a crash mid-replay, or a
sender's duplicate delivery inside the window, would produce a second replayed result). With the
replay id in the key each replay runs exactly once per event, a second replay is a new run, and
the AI answer cache (keyed by flow and prompt, not by marker) still answers an unchanged flow
without a model call. Redriven records (``hookstream-redriven``) keep the plain keys: a
dead-lettered event was never marked, so its redrive runs, and a redrive of something already
done is skipped.

Its input may come from any producer (:mod:`schemas.events`): the event is decoded with its Kafka
record, which gives the attributes a foreign producer may leave out (time, key, trace id) and
the attributes of a binary-mode CloudEvent (``ce_*`` headers).
"""

from __future__ import annotations

import logging
from typing import Any

from agents import metrics
from agents.emit import emit
from agents.outbound.lookups import Enricher, event_context
from agents.outbound.retry import RetryPolicy, with_retries
from agents.resources import Resources
from agents.stages.base import InvalidRecord, Stage, decode, traced
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import HookstreamError
from schemas.events import CloudEvent, EnrichedEvent
from schemas.headers import carried_headers, replay_id, replay_suffix

log = logging.getLogger(__name__)


def seen_key(event: CloudEvent, replay: str | None = None) -> str:
    return f"seen/{event.event_key}{replay_suffix(replay)}"


def flows_taking(config: HookstreamConfig, event: CloudEvent) -> list[FlowConfig]:
    """The flows that take ``event``: its source and type, then each flow's ``match.where``
    (the event context is built only when a flow has one). ``hookstream flow test`` asks it."""
    flows = config.flows_for(event.source, event.type)
    if any(flow.match.has_where for flow in flows):
        context = event_context(event)
        flows = [flow for flow in flows if flow.match.where_holds(context)]
    return flows


class EnrichStage(Stage):
    name = "enrich"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self.policy = RetryPolicy(
            max_attempts=3,
            backoff_s=config.worker.retry_backoff_s,
            backoff_max_s=config.worker.retry_backoff_max_s,
        )
        self.enricher = Enricher(config, resources.session_for, resources.tables)

    @traced
    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            cloud_event = decode(CloudEvent, message.value, stage=self.name, message=message)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        flows = flows_taking(self.config, cloud_event)
        if not flows:
            log.debug("no flow matches %s %s", cloud_event.source, cloud_event.type)
            return
        dedupe = self.resources.dedupe
        seen = seen_key(cloud_event, replay_id(message))
        if dedupe is not None and seen in dedupe:
            metrics.DUPLICATES_SKIPPED.labels(self.name).inc()
            log.info("skipping %s: this delivery was already processed", cloud_event.event_key)
            return
        enricher = self.enricher
        dead_lettered = False
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
                dead_lettered = True
                continue
            await emit(
                self.resources.writer,
                self.topics.enriched,
                dumps(enriched),
                key=cloud_event.partitionkey.encode(),
                headers=carried_headers(message),
            )
        # A dead-lettered event stays unmarked: its redrive, or the sender's retry, runs again.
        if dedupe is not None and not dead_lettered:
            await dedupe.put(self.resources.writer, seen, 1)
