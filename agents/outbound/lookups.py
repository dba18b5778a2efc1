"""A flow's HTTP lookups: what the enrich stage (:mod:`agents.stages.enrich`) adds to an event.

Each lookup's URL is a template filled from the event, checked by the egress guard and fetched
with the shared session; a flow's lookups run concurrently and any failure fails the whole
enrichment (the stage retries or dead-letters it). A flow without lookups passes the event
through with an empty enrichment.

With spans on, each lookup is a ``lookup <name>`` span (kind client) under the enrich stage's,
and its request's ``traceparent`` names that span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from agents import metrics
from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import request_json
from schemas import templates
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig, LookupConfig
from schemas.errors import PermanentRemoteError
from schemas.events import CloudEvent, EnrichedEvent
from streams.metrics import tracing

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

    def url_for(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> str:
        """The lookup's URL for one event (:func:`event_context`): what it GETs, and what
        ``hookstream flow test`` prints without calling it."""
        return templates.render_url(self._urls[(flow.name, lookup.name)], context)

    async def _lookup(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> Any:
        """One lookup, timed in ``hookstream_lookup_seconds`` by outcome (ok, not_found when
        a 404 answers null, error for any failure, the guard's refusals included; a lookup
        cancelled because another of the flow failed is not counted)."""
        histogram = metrics.LOOKUP_SECONDS
        started_s = time.perf_counter()
        try:
            if tracing.enabled():
                with tracing.span(
                    f"lookup {lookup.name}",
                    kind="client",
                    attributes={
                        "http.request.method": "GET",
                        "hookstream.lookup": lookup.name,
                        "hookstream.flow": flow.name,
                    },
                ):
                    body, found = await self._fetch(flow, lookup, context)
            else:
                body, found = await self._fetch(flow, lookup, context)
        except Exception:
            elapsed_s = time.perf_counter() - started_s
            histogram.labels(flow.name, lookup.name, "error").observe(elapsed_s)
            raise
        outcome = "ok" if found else "not_found"
        histogram.labels(flow.name, lookup.name, outcome).observe(time.perf_counter() - started_s)
        return body

    async def _fetch(
        self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]
    ) -> tuple[Any, bool]:
        """The lookup's answer, and False when it was a 404 taken as null."""
        url = self.url_for(flow, lookup, context)
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
        return body, status != 404

    async def enrich_for(self, flow: FlowConfig, event: CloudEvent) -> EnrichedEvent:
        """Run one flow's lookups concurrently; any failure fails the whole enrichment."""
        context = event_context(event)
        values = await asyncio.gather(
            *(self._lookup(flow, lookup, context) for lookup in flow.enrich)
        )
        enrichment = {lookup.name: value for lookup, value in zip(flow.enrich, values, strict=True)}
        return EnrichedEvent(flow=flow.name, event=event, enrichment=enrichment)
