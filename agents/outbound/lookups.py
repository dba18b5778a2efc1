"""A flow's HTTP lookups: what the enrich stage (:mod:`agents.stages.enrich`) adds to an event.

Each lookup's URL is a template filled from the event, checked by the egress guard and fetched
with the shared session; a flow's lookups run concurrently and any failure fails the whole
enrichment (the stage retries or dead-letters it). A flow without lookups passes the event
through with an empty enrichment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import request_json
from schemas import templates
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig, LookupConfig
from schemas.errors import PermanentRemoteError
from schemas.events import CloudEvent, EnrichedEvent

STAGE = "enrich"


def event_context(event: CloudEvent) -> dict[str, Any]:
    return {"event": event.model_dump(mode="json"), "data": event.data}


class Enricher:
    """``session_for`` picks the session a lookup's guard calls for
    (:meth:`agents.resources.Resources.session_for`), at call time."""

    def __init__(
        self,
        config: HookstreamConfig,
        session_for: Callable[[NetGuard], aiohttp.ClientSession],
    ) -> None:
        self.config = config
        self.session_for = session_for
        self._urls = {
            (flow.name, lookup.name): templates.parse(lookup.url)
            for flow in config.flows
            for lookup in flow.enrich
        }
        self._guards = {
            (flow.name, lookup.name): NetGuard.for_target(
                config.worker, lookup.allow_private, stage=STAGE
            )
            for flow in config.flows
            for lookup in flow.enrich
        }

    async def _lookup(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> Any:
        url = templates.render_url(self._urls[(flow.name, lookup.name)], context)
        guard = self._guards[(flow.name, lookup.name)]
        status, body = await request_json(
            self.session_for(guard),
            "GET",
            url,
            stage=STAGE,
            what=f"lookup {lookup.name}",
            timeout_s=lookup.timeout_s,
            headers=lookup.headers,
            not_found_ok=lookup.on_not_found == "null",
            guard=guard,
        )
        if status == 404 and lookup.on_not_found == "fail":
            raise PermanentRemoteError(f"lookup {lookup.name}: not found", stage=STAGE, status=404)
        return body

    async def enrich_for(self, flow: FlowConfig, event: CloudEvent) -> EnrichedEvent:
        """Run one flow's lookups concurrently; any failure fails the whole enrichment."""
        context = event_context(event)
        values = await asyncio.gather(
            *(self._lookup(flow, lookup, context) for lookup in flow.enrich)
        )
        enrichment = {lookup.name: value for lookup, value in zip(flow.enrich, values, strict=True)}
        return EnrichedEvent(flow=flow.name, event=event, enrichment=enrichment)
