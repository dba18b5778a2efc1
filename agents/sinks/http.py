"""Generic HTTP sink: one templated request per AI result (a CRM update, a webhook out).

Each request carries ``Idempotency-Key: <event source>/<event id>/<flow>/<sink>``: the same
delivery retried after a crash carries the same key, so a target that honours the header
applies it once.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from agents.http import request_json
from agents.retry import RetryPolicy, with_retries
from schemas import templates
from schemas.config import SinkConfig, WorkerSettings
from schemas.events import AIResult, DeliveryReceipt

STAGE = "sink"


def idempotency_key(result: AIResult, sink: str) -> str:
    return f"{result.event.event_key}/{result.flow}/{sink}"


def sink_context(result: AIResult) -> dict[str, Any]:
    return {
        "event": result.event.model_dump(mode="json"),
        "data": result.event.data,
        "enrichment": result.enrichment,
        "result": result.output,
        "ai": {"model": result.model, "provider": result.provider, "flow": result.flow},
    }


class HttpSink:
    def __init__(
        self, flow: str, config: SinkConfig, session: aiohttp.ClientSession, worker: WorkerSettings
    ) -> None:
        self.flow = flow
        self.config = config
        self.session = session
        self.url = templates.parse(config.url)
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts,
            backoff_s=worker.retry_backoff_s,
            backoff_max_s=worker.retry_backoff_max_s,
        )

    async def deliver(self, result: AIResult) -> DeliveryReceipt:
        context = sink_context(result)
        url = templates.render_url(self.url, context)
        body = templates.render_json(self.config.body, context)
        key = idempotency_key(result, self.config.name)
        headers = {**self.config.headers, "Idempotency-Key": key}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"

        async def attempt(_: int) -> int:
            status, _body = await request_json(
                self.session,
                self.config.method,
                url,
                stage=STAGE,
                what=f"sink {self.config.name}",
                timeout_s=self.config.timeout_s,
                headers=headers,
                json_body=body,
                ok_statuses=frozenset(self.config.success_codes),
            )
            return status

        status, attempts = await with_retries(attempt, self.policy, what=f"sink {self.config.name}")
        return DeliveryReceipt(
            flow=self.flow,
            sink=self.config.name,
            event_key=result.event.event_key,
            idempotency_key=key,
            status=status,
            attempts=attempts,
        )
