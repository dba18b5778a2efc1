"""Generic HTTP sink: one templated request per AI result (a CRM update, a webhook out).

Each request carries ``Idempotency-Key`` (:func:`agents.sinks.base.idempotency_key`): the same
delivery retried after a crash carries the same key, so a target that honours the header
applies it once. The URL is a template filled from event data, so it passes the SSRF guard
(:mod:`agents.outbound.egress_guard`) before every request.

Requests go through :class:`agents.outbound.wire.WireClient` (kept-alive HTTP/1.1 on an asyncio
protocol, the model call's client), not aiohttp's: in the sinks benchmark aiohttp's client side
was ~27 % of the sink worker's CPU (issue 16; bench/results/pipeline-sinks-7.md). What changes
on the wire: ``Accept: application/json`` and ``User-Agent: hookstream`` instead of aiohttp's
``*/*`` and its own (a sink's ``headers`` may set either), no ``Accept-Encoding`` (a gzip answer
is still read), ``Content-Type: application/json`` even on a body-less request. A redirect
of a guarded call is refused as before; with ``allow_private`` the request that answered 3xx
is sent again through aiohttp's session, which follows it as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import DEFAULT_CONNECT_TIMEOUT_S
from agents.outbound.wire import WireClient, send_checked
from agents.sinks.base import STAGE, Delivery, Sink
from schemas import templates
from schemas.config_sinks import HttpSinkConfig


def http_request(
    config: HttpSinkConfig, url: templates.Template, delivery: Delivery
) -> tuple[str, dict[str, str], Any]:
    """One delivery's URL, headers and JSON body, without the API key (the sink adds it):
    what ``hookstream flow test`` prints, rendered by the code that sends it."""
    rendered = templates.render_url(url, delivery.context)
    body = templates.render_json(config.body, delivery.context)
    return rendered, {**config.headers, "Idempotency-Key": delivery.idempotency_key}, body


class WireSink(Sink):
    """A sink that sends one JSON request per delivery through its own :class:`WireClient`
    (its connections closed with the sink), ``headers`` on every request."""

    def __init__(
        self,
        flow: str,
        name: str,
        session: aiohttp.ClientSession,
        guard: NetGuard,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(flow, name)
        self.session = session
        self.guard = guard
        self.client = WireClient(
            headers,
            what=self.what,
            stage=STAGE,
            connect_timeout_s=session.timeout.sock_connect or DEFAULT_CONNECT_TIMEOUT_S,
            public_only=not guard.allow_private,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.close()

    async def send(
        self,
        method: str,
        url: str,
        body: Any,
        *,
        key: str,
        timeout_s: float,
        ok_statuses: frozenset[int],
    ) -> int:
        """Deliver ``body`` (JSON; None: none) to ``url`` with ``key`` as Idempotency-Key: the
        status, or a RemoteError/UnsafeDestination (:mod:`agents.outbound.http`'s mapping)."""
        status, _ = await send_checked(
            self.client,
            self.session,
            self.guard,
            method,
            url,
            body,
            timeout_s=timeout_s,
            headers={"Idempotency-Key": key},
            ok_statuses=ok_statuses,
        )
        return status


class HttpSink(WireSink):
    def __init__(
        self, flow: str, config: HttpSinkConfig, session: aiohttp.ClientSession, guard: NetGuard
    ) -> None:
        headers = dict(config.headers)
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        super().__init__(flow, config.name, session, guard, headers)
        self.config = config
        self.url = templates.parse(config.url)
        self.ok_statuses = frozenset(config.success_codes)

    async def add(self, delivery: Delivery) -> int:
        url, _, body = http_request(self.config, self.url, delivery)
        return await self.send(
            self.config.method,
            url,
            body,
            key=delivery.idempotency_key,
            timeout_s=self.config.timeout_s,
            ok_statuses=self.ok_statuses,
        )
