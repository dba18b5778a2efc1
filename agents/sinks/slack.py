"""Slack incoming-webhook sink: one message per result.

Slack's incoming webhooks take ``POST {"text": …}`` on a secret URL (held in the environment
variable named by ``webhook_url_env``) and answer ``200 ok``; 429 comes with Retry-After,
and 400/403/404/410 (``invalid_payload``, ``no_service``, ``channel_is_archived``…) are
permanent. Slack ignores Idempotency-Key; it is sent anyway (the delivered-memory is what keeps
a message from being posted twice). Replays are not re-posted unless ``deliver_replays`` is set.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from agents.outbound.egress_guard import NetGuard
from agents.sinks.base import Delivery
from agents.sinks.http import WireSink
from schemas import templates
from schemas.config_base import secret_origin
from schemas.config_sinks import SlackSinkConfig
from schemas.errors import ConfigError


def slack_message(
    config: SlackSinkConfig, text: templates.Template, context: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body posted for one result (``hookstream flow test`` prints it)."""
    body: dict[str, Any] = {"text": templates.render_text(text, context)}
    if config.username:
        body["username"] = config.username
    if config.icon_emoji:
        body["icon_emoji"] = config.icon_emoji
    return body


class SlackSink(WireSink):
    """Sent through :class:`agents.sinks.http.WireSink`'s client, as the HTTP sink's requests."""

    def __init__(
        self, flow: str, config: SlackSinkConfig, session: aiohttp.ClientSession, guard: NetGuard
    ) -> None:
        if config.webhook_url is None:
            raise ConfigError(
                [f"sink {config.name}: no webhook URL in {secret_origin(config, 'webhook_url')}"]
            )
        super().__init__(flow, config.name, session, guard, {})
        self.config = config
        self.webhook_url = config.webhook_url.get_secret_value()
        self.text = templates.parse(config.text)

    def message(self, delivery: Delivery) -> dict[str, Any]:
        return slack_message(self.config, self.text, delivery.context)

    async def add(self, delivery: Delivery) -> int:
        return await self.send(
            "POST",
            self.webhook_url,
            self.message(delivery),
            key=delivery.idempotency_key,
            timeout_s=self.config.timeout_s,
            ok_statuses=_OK,
        )


_OK = frozenset({200})
