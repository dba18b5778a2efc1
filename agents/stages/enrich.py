"""The enrich stage: events → enriched, one record per matching flow.

Its dedupe reads the marks of the AI stage (:mod:`agents.stages.ai`) in the worker's durable
dedupe map (:mod:`agents.state.durable_map`): a flow is enriched again only if its result for
the event is neither on Kafka (``done/<flow>/<source>/<id>``) nor dead-lettered by the AI stage
(``dead/…``). A sender's retry of the same delivery, whichever gateway took it, carries the same
id and the same partition key, so it reaches the same partition after the original and is
dropped once the original's results are done. Enrich writes no mark of its own (issue 16: one
acknowledged write less per event): a retry that arrives while the original is still between
enrich and its result is enriched again, and the AI stage, which takes a key's records in order,
skips it by the original's ``done`` mark. The ``seen/<source>/<id>`` marks of earlier versions
are still honoured while they live.

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
from agents.state.durable_map import DurableMap
from agents.state.recovery import dead_key, done_key
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import HookstreamError, RecordTooLarge
from schemas.events import CloudEvent, EnrichedEvent
from schemas.headers import carried_headers, flow_headers, replay_id, replay_suffix

log = logging.getLogger(__name__)


def seen_key(event: CloudEvent, replay: str | None = None) -> str:
    """The mark enrich wrote before issue 16 (none is written now; see the module docstring)."""
    return f"seen/{event.event_key}{replay_suffix(replay)}"


def pending(
    dedupe: DurableMap, flows: list[FlowConfig], event: CloudEvent, replay: str | None
) -> list[FlowConfig]:
    """The flows of ``flows`` whose result for ``event`` is neither on Kafka nor
    dead-lettered: those a delivery of it must still enrich."""
    if seen_key(event, replay) in dedupe:
        return []
    source, event_id = event.source, event.id
    return [
        flow
        for flow in flows
        if done_key(flow.name, source, event_id, replay) not in dedupe
        and dead_key(flow.name, source, event_id, replay) not in dedupe
    ]


def flows_taking(config: HookstreamConfig, event: CloudEvent) -> list[FlowConfig]:
    """The flows that take ``event``: its source and type, then each flow's ``match.where``
    (the event context is built only when a flow has one). ``hookstream flow test`` asks it."""
    return FlowRouter(config).flows_taking(event)


# Distinct (source, type) pairs remembered at most; the types come from senders, so the memo
# is emptied when it is full rather than allowed to grow without bound.
MAX_KINDS = 10_000


class FlowRouter:
    """:func:`flows_taking` for every event of a worker, with the flows of each (source,
    type) found once: matching them anew (the flows' type globs, ``has_where`` through
    pydantic's private-attribute lookup) was a twentieth of the enrich stage's CPU."""

    def __init__(self, config: HookstreamConfig) -> None:
        self.config = config
        # (source, type) -> its flows, and whether any of them has a ``where``
        self._kinds: dict[tuple[str, str], tuple[list[FlowConfig], bool]] = {}

    def flows_taking(self, event: CloudEvent) -> list[FlowConfig]:
        kind = (event.source, event.type)
        known = self._kinds.get(kind)
        if known is None:
            flows = self.config.flows_for(*kind)
            known = (flows, any(flow.match.has_where for flow in flows))
            if len(self._kinds) >= MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = known
        flows, conditional = known
        if not conditional:
            return list(flows)
        context = event_context(event)
        return [flow for flow in flows if flow.match.where_holds(context)]


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
        self.router = FlowRouter(config)

    @traced
    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            cloud_event = decode(CloudEvent, message.value, stage=self.name, message=message)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        flows = self.router.flows_taking(cloud_event)
        if not flows:
            log.debug("no flow matches %s %s", cloud_event.source, cloud_event.type)
            return
        dedupe = self.resources.dedupe
        if dedupe is not None:
            flows = pending(dedupe, flows, cloud_event, replay_id(message))
            if not flows:
                metrics.DUPLICATES_SKIPPED.labels(self.name).inc()
                log.info("skipping %s: this delivery was already processed", cloud_event.event_key)
                return
        enricher = self.enricher
        for flow in flows:

            async def attempt(_: int, flow: FlowConfig = flow) -> EnrichedEvent:
                return await enricher.enrich_for(flow, cloud_event)

            try:
                enriched, _ = await with_retries(
                    attempt, self.policy, what=f"flow {flow.name} enrichment"
                )
            except HookstreamError as exc:
                # Unmarked: its redrive, or the sender's retry, enriches this flow again.
                await self._fail(message, exc, extra_headers=flow_headers(flow.name))
                continue
            try:
                await emit(
                    self.resources.writer,
                    self.topics.enriched,
                    dumps(enriched),
                    key=cloud_event.partitionkey.encode(),
                    headers=carried_headers(message),
                )
            except RecordTooLarge as exc:  # its lookups' answers made it too large: for good
                failure = RecordTooLarge(f"flow {flow.name}'s enriched event is not written: {exc}")
                await self._fail(message, failure, extra_headers=flow_headers(flow.name))
