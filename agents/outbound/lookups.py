"""A flow's lookups, HTTP or table: what the enrich stage (:mod:`agents.stages.enrich`) adds to
an event.

Each lookup's URL is a template filled from the event, checked by the egress guard and fetched
by the lookup's own client (below); a flow's lookups run concurrently and any failure fails the
whole enrichment (the stage retries or dead-letters it). A flow without lookups passes the
event through with an empty enrichment.

With spans on, each lookup is a ``lookup <name>`` span (kind client) under the enrich stage's,
and its request's ``traceparent`` names that span.

The GET goes through the wire client (:class:`agents.outbound.wire.WireClient`, one per
lookup, its headers encoded once), not aiohttp's: a lookup's client side cost 106 µs of the
worker's CPU through aiohttp and costs 41 µs through it (issue 16). The session
``session_for`` gives still decides the pool's life (a new session, a new pool) and follows
the redirect a lookup with ``allow_private`` gets (:func:`agents.outbound.wire.send_checked`).

A lookup with ``cache`` answers from its :class:`~agents.outbound.cache.TTLCache` while the
rendered URL's answer is fresh (no request, no span, counted in
``hookstream_lookup_cache_total``). A ``table`` lookup reads the worker's copy of a compacted
topic (:mod:`agents.state.table`): a key the table does not hold is a 404's equivalent (null,
or dead-lettered with ``on_not_found: fail``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from agents import metrics
from agents.outbound.cache import TTLCache
from agents.outbound.egress_guard import NetGuard
from agents.outbound.wire import WireClient, send_checked
from agents.state.table import KafkaTable
from schemas import templates
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig, LookupConfig
from schemas.errors import StageError
from schemas.events import CloudEvent, EnrichedEvent
from streams.metrics import tracing

STAGE = "enrich"
# A lookup with on_not_found: "null" takes a 404 as an answer besides any 2xx (the wire
# client's default, ok_statuses None).
ANSWERED_OR_NOT_FOUND = frozenset(range(200, 300)) | {404}


def event_context(event: CloudEvent) -> dict[str, Any]:
    return {"event": event.model_dump(mode="json"), "data": event.data}


class Enricher:
    """``session_for`` picks the session a lookup's guard calls for
    (:meth:`agents.resources.Resources.session_for`), at call time. ``tables``: the worker's
    tables by topic (:attr:`agents.resources.Resources.tables`), loaded before any event."""

    def __init__(
        self,
        config: HookstreamConfig,
        session_for: Callable[[NetGuard], aiohttp.ClientSession],
        tables: Mapping[str, KafkaTable] | None = None,
    ) -> None:
        self.config = config
        self.session_for = session_for
        self.tables: Mapping[str, KafkaTable] = tables or {}
        self._urls = {
            (flow.name, lookup.name): templates.parse(lookup.url)
            for flow in config.flows
            for lookup in flow.enrich
            if lookup.url is not None
        }
        self._keys = {
            (flow.name, lookup.name): templates.parse(lookup.table.key)
            for flow in config.flows
            for lookup in flow.enrich
            if lookup.table is not None
        }
        self._caches = {
            (flow.name, lookup.name): TTLCache(
                ttl_s=lookup.cache.ttl_s, max_entries=lookup.cache.max_entries
            )
            for flow in config.flows
            for lookup in flow.enrich
            if lookup.cache is not None
        }
        self._guards = {
            (flow.name, lookup.name): NetGuard.for_target(
                config.worker, lookup.allow_private, stage=STAGE
            )
            for flow in config.flows
            for lookup in flow.enrich
        }
        # The flows whose lookups' templates read ``event.*``: only for those is the event
        # dumped into the render context (~5 µs per event, issue 16); the others read ``data``.
        parsed = {**self._urls, **self._keys}
        self._reads_event = {
            flow for (flow, _), template in parsed.items() if "event" in template.roots
        }
        # hookstream_lookup_seconds' children by (flow, lookup, outcome): labels() takes a lock
        # and hashes the labels per call.
        self._timings: dict[tuple[str, str, str], Any] = {}
        # Each HTTP lookup's client, with the session it was made for.
        self._clients: dict[tuple[str, str], tuple[aiohttp.ClientSession, WireClient]] = {}

    def _client(
        self, lookup: LookupConfig, key: tuple[str, str], session: aiohttp.ClientSession
    ) -> WireClient:
        """The lookup's client for ``session``: a new session (the shared connections
        started again) gets a new client, the old one's connections closed."""
        held = self._clients.get(key)
        if held is not None and held[0] is session:
            return held[1]
        if held is not None:
            held[1].close()
        client = WireClient(
            lookup.headers,
            what=f"lookup {lookup.name}",
            stage=STAGE,
            connect_timeout_s=self.config.worker.http_connect_timeout_s,
            public_only=not self._guards[key].allow_private,
        )
        self._clients[key] = (session, client)
        return client

    def close(self) -> None:
        """Close the lookups' idle connections."""
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()

    def url_for(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> str:
        """The lookup's URL for one event (:func:`event_context`): what it GETs, and what
        ``hookstream flow test`` prints without calling it."""
        return templates.render_url(self._urls[(flow.name, lookup.name)], context)

    def key_for(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> str:
        """A table lookup's key for one event: its ``table.key`` rendered as plain text."""
        return templates.render_text(self._keys[(flow.name, lookup.name)], context)

    def target_for(
        self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]
    ) -> dict[str, str]:
        """What the lookup reads for one event, as ``hookstream flow test`` reports it:
        ``{"url": …}``, or ``{"table": topic, "key": …}``."""
        if lookup.table is not None:
            return {"table": lookup.table.topic, "key": self.key_for(flow, lookup, context)}
        return {"url": self.url_for(flow, lookup, context)}

    def _from_table(
        self, flow: FlowConfig, lookup: LookupConfig, topic: str, context: dict[str, Any]
    ) -> tuple[Any, bool]:
        """The value of the rendered key in the table of ``topic``, and False when the table
        does not hold the key."""
        table = self.tables.get(topic)
        if table is None:  # only a process without the worker's tables gets here
            raise StageError(f"lookup {lookup.name}: table {topic} is not loaded here", stage=STAGE)
        found, value = table.lookup(self.key_for(flow, lookup, context))
        if not found and lookup.on_not_found == "fail":
            raise StageError(f"lookup {lookup.name}: key not in table {topic}", stage=STAGE)
        return value, found

    async def _lookup(self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]) -> Any:
        """One lookup, timed in ``hookstream_lookup_seconds`` by outcome (ok, not_found when
        a 404 or a key the table lacks answers null, error for any failure, the guard's
        refusals included; a lookup cancelled because another of the flow failed is not
        counted, nor an answer from the cache)."""
        started_s = time.perf_counter()
        cache = self._caches.get((flow.name, lookup.name))
        try:
            if lookup.table is not None:
                body, found = self._from_table(flow, lookup, lookup.table.topic, context)
            elif cache is not None:
                url = self.url_for(flow, lookup, context)
                hit, body = cache.get(url)
                metrics.LOOKUP_CACHE.labels(flow.name, lookup.name, "hit" if hit else "miss").inc()
                if hit:
                    return body
                body, found = await self._traced_fetch(flow, lookup, context)
                cache.put(url, body)  # an answer: errors raised before this line
            else:
                body, found = await self._traced_fetch(flow, lookup, context)
        except Exception:
            elapsed_s = time.perf_counter() - started_s
            self._timing(flow.name, lookup.name, "error").observe(elapsed_s)
            raise
        outcome = "ok" if found else "not_found"
        self._timing(flow.name, lookup.name, outcome).observe(time.perf_counter() - started_s)
        return body

    def _timing(self, flow: str, lookup: str, outcome: str) -> Any:
        labels = (flow, lookup, outcome)
        child = self._timings.get(labels)
        if child is None:
            child = self._timings[labels] = metrics.LOOKUP_SECONDS.labels(*labels)
        return child

    async def _traced_fetch(
        self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]
    ) -> tuple[Any, bool]:
        """:meth:`_fetch` under its ``lookup <name>`` span when spans are on."""
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
                return await self._fetch(flow, lookup, context)
        return await self._fetch(flow, lookup, context)

    async def _fetch(
        self, flow: FlowConfig, lookup: LookupConfig, context: dict[str, Any]
    ) -> tuple[Any, bool]:
        """The lookup's answer, and False when it was a 404 taken as null (with
        ``on_not_found: fail`` a 404 is a permanent error, the answer's start in its message)."""
        url = self.url_for(flow, lookup, context)
        key = (flow.name, lookup.name)
        guard = self._guards[key]
        session = self.session_for(guard)
        status, body = await send_checked(
            self._client(lookup, key, session),
            session,
            guard,
            "GET",
            url,
            None,
            timeout_s=lookup.timeout_s,
            headers={},
            ok_statuses=ANSWERED_OR_NOT_FOUND if lookup.on_not_found == "null" else None,
        )
        if status == 404:
            return None, False
        return body, True

    async def enrich_for(self, flow: FlowConfig, event: CloudEvent) -> EnrichedEvent:
        """Run one flow's lookups concurrently; any failure fails the whole enrichment.

        A flow without lookups skips the render context, one whose lookups do not read
        ``event.*`` skips dumping the event into it, and a single lookup is awaited without a
        task of its own: each was paid per event (issue 16)."""
        if not flow.enrich:
            return EnrichedEvent(flow=flow.name, event=event, enrichment={})
        reads_event = flow.name in self._reads_event
        context = event_context(event) if reads_event else {"data": event.data}
        if len(flow.enrich) == 1:
            values = [await self._lookup(flow, flow.enrich[0], context)]
        else:
            values = await asyncio.gather(
                *(self._lookup(flow, lookup, context) for lookup in flow.enrich)
            )
        enrichment = {lookup.name: value for lookup, value in zip(flow.enrich, values, strict=True)}
        return EnrichedEvent(flow=flow.name, event=event, enrichment=enrichment)
