"""Generic HTTP sink: one templated request per AI result (a CRM update, a webhook out).

Each request carries ``Idempotency-Key`` (:func:`agents.sinks.base.idempotency_key`): the same
delivery retried after a crash carries the same key, so a target that honours the header
applies it once. The URL is a template filled from event data, so it passes the SSRF guard
(:mod:`agents.outbound.egress_guard`) before every request.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import request_json
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


class HttpSink(Sink):
    def __init__(
        self, flow: str, config: HttpSinkConfig, session: aiohttp.ClientSession, guard: NetGuard
    ) -> None:
        super().__init__(flow, config.name)
        self.config = config
        self.session = session
        self.guard = guard
        self.url = templates.parse(config.url)
        self.ok_statuses = frozenset(config.success_codes)

    async def add(self, delivery: Delivery) -> int:
        url, headers, body = http_request(self.config, self.url, delivery)
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        status, _ = await request_json(
            self.session,
            self.config.method,
            url,
            stage=STAGE,
            what=self.what,
            timeout_s=self.config.timeout_s,
            headers=headers,
            json_body=body,
            ok_statuses=self.ok_statuses,
            guard=self.guard,
        )
        return status
