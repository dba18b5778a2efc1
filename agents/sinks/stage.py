"""The sink stage: deliver each AI result of one flow to one configured sink."""

from __future__ import annotations

from typing import Any

from agents.emit import emit
from agents.resources import Resources
from agents.sinks.http import HttpSink
from agents.stage_base import InvalidRecord, Stage, decode
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.events import AIResult
from streams.errors import HookstreamError


class SinkStage(Stage):
    """One configured sink of one flow; the sink worker runs one of these per sink."""

    name = "sink"

    def __init__(
        self, config: HookstreamConfig, resources: Resources, flow: str, sink: str
    ) -> None:
        super().__init__(config, resources)
        self.flow = flow
        self.sink_config = next(s for s in config.flow(flow).sinks if s.name == sink)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            result = decode(AIResult, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        if result.flow != self.flow:
            return
        sink = HttpSink(self.flow, self.sink_config, self.resources.session, self.config.worker)
        try:
            receipt = await sink.deliver(result)
        except HookstreamError as exc:
            await self._fail(message, exc, extra_headers=self._headers())
            return
        await emit(
            self.resources.writer,
            self.topics.receipts,
            dumps(receipt),
            key=result.event.partitionkey.encode(),
        )

    def _headers(self) -> list[tuple[str, bytes]]:
        return [
            ("hookstream-flow", self.flow.encode()),
            ("hookstream-sink", self.sink_config.name.encode()),
        ]
