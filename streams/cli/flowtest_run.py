"""One event through every flow, without Kafka: what ``hookstream flow test`` reports.

Each step runs the worker's own code, so the report cannot drift from what the worker does:

- the webhook body becomes its CloudEvent by the gateway's
  :func:`streams.gateway.ingest.build_event` (id, type and partition key from the source);
- flows match by :func:`agents.stages.enrich.flows_taking`; a flow that does not is reported
  with the reason (the source, the type against the flow's patterns, or its ``match.where``);
- lookup URLs are rendered by :meth:`agents.outbound.lookups.Enricher.url_for`; answers come
  from files, or (``call_lookups``) from a real GET by
  :meth:`~agents.outbound.lookups.Enricher.enrich_for`, once, without the stage's retries; a
  lookup neither given nor called is null;
- the prompt is rendered by :meth:`agents.ai.task.AITask.requests_for`, the provider's request
  body by its client's ``payload``; the answer is checked by :meth:`agents.ai.task.AITask.run`
  itself, its client answering from the given answers (the first, then the re-ask's) or, with
  ``call_model``, the provider's real client — so an invalid answer is re-asked and
  dead-lettered with the message the worker would write (the answer cache is not consulted);
- each sink's request or row is rendered by the sink's own function
  (:func:`agents.sinks.http.http_request`, :func:`agents.sinks.slack.slack_message`,
  :func:`agents.sinks.postgres.postgres_row`) over :func:`agents.sinks.base.sink_context`;
  secrets (an API key, Slack's webhook URL, a DSN) are never shown, only where they come from;
  a sink whose ``when`` is false (:meth:`schemas.config_sinks.HttpSinkConfig.when_holds`) is
  reported skipped, as the sink stage skips it.

A step that fails the way the worker would dead-letter is reported as the flow's (or the
sink's) ``dead_letter``: stage, error class and message, as the DLQ headers would say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.clients import client_for
from agents.ai.http_client import HttpChatClient
from agents.ai.provider import ChatRequest, Completion
from agents.ai.task import AITask, ProviderRuntime
from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import new_session
from agents.outbound.lookups import Enricher, event_context
from agents.outbound.retry import RetriesExhausted
from agents.sinks.base import Delivery, idempotency_key, sink_context
from agents.sinks.http import http_request
from agents.sinks.postgres import postgres_row
from agents.sinks.slack import slack_message
from agents.stages.ai import combined, transformed
from agents.stages.enrich import flows_taking
from schemas import templates
from schemas.config import HookstreamConfig
from schemas.config_ai import ProviderConfig
from schemas.config_base import secret_origin
from schemas.config_flows import FlowConfig
from schemas.config_sinks import HttpSinkConfig, SinkConfig, SlackSinkConfig
from schemas.errors import HookstreamError, InvalidPayload, ToolError
from schemas.events import AIResult, CloudEvent, EnrichedEvent, TokenUsage
from streams.gateway.ingest import build_event

HIDDEN = "***"


@dataclass(frozen=True, slots=True)
class FlowInput:
    """What one run is given: the webhook as its sender posts it, and the answers to use."""

    source: str
    body: bytes
    payload: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    received_at: datetime | None = None
    #: lookup name → its answer (every flow's lookup of that name gets it)
    lookups: Mapping[str, Any] = field(default_factory=dict)
    #: the model's answers as text: the first, then the re-ask's (the last one repeats); for
    #: a multi-step flow each is a JSON mapping of step name → that step's answer
    answers: Sequence[str] = ()
    answers_from: str = "given"
    call_model: bool = False
    call_lookups: bool = False


def dead_letter(stage: str, error: BaseException) -> dict[str, str]:
    """A dead letter's reason as its headers name it (:mod:`agents.emit`)."""
    return {"stage": stage, "error_class": type(error).__name__, "message": str(error)[:2000]}


class _GivenAnswers:
    """A chat client answering from the given answers, recording the requests it got."""

    def __init__(self, provider: ProviderConfig, answers: Sequence[str]) -> None:
        self.provider = provider
        self.answers = answers
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        content = self.answers[min(len(self.requests), len(self.answers) - 1)]
        self.requests.append(request)
        return Completion(content=content, model=request.model, usage=TokenUsage(), latency_ms=0)


def why_not(flow: FlowConfig, event: CloudEvent) -> str:
    """Why ``flow`` does not take ``event``: its source, its types, or its ``match.where``."""
    if event.source != flow.match.source:
        return f"source is {event.source}, the flow takes {flow.match.source}"
    if not flow.match.matches(event.source, event.type):
        patterns = ", ".join(flow.match.types)
        return f"type {event.type} matches none of the flow's types ({patterns})"
    return f"match.where is false for this event: {_compact(flow.match.where)}"


def _compact(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class FlowTester:
    """Runs :class:`FlowInput` s against one config; ``async with`` holds its HTTP sessions
    (used only to call a model or a lookup when asked)."""

    def __init__(self, config: HookstreamConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None
        self.enricher = Enricher(config, self._session_for)

    async def __aenter__(self) -> FlowTester:
        connect_timeout_s = self.config.worker.http_connect_timeout_s
        self._session = new_session(connect_timeout_s=connect_timeout_s)
        self._guarded = new_session(connect_timeout_s=connect_timeout_s, public_only=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.enricher.close()
        for session in (self._session, self._guarded):
            if session is not None:
                await session.close()

    @property
    def _plain(self) -> aiohttp.ClientSession:
        """The session without the SSRF guard: the AI stage's (providers are operator
        config), and a lookup's that allows private addresses."""
        if self._session is None:
            raise RuntimeError("FlowTester used outside `async with`")
        return self._session

    def _session_for(self, guard: NetGuard) -> aiohttp.ClientSession:
        if guard.allow_private:
            return self._plain
        if self._guarded is None:
            raise RuntimeError("FlowTester used outside `async with`")
        return self._guarded

    def event_for(self, given: FlowInput) -> CloudEvent:
        """The CloudEvent the gateway would put on the events topic for this webhook."""
        source = next((s for s in self.config.sources if s.name == given.source), None)
        if source is None:
            known = ", ".join(s.name for s in self.config.sources)
            raise ToolError(f"source {given.source!r} is not one of the config's ({known})")
        try:
            return build_event(
                source,
                CIMultiDict(given.headers),
                given.body,
                given.payload,
                forwarded_headers=self.config.gateway.forwarded_headers,
                received_at=given.received_at,
            )
        except InvalidPayload as exc:
            raise ToolError(f"the gateway would refuse this webhook: {exc}") from None

    async def run(self, given: FlowInput) -> dict[str, Any]:
        """The report: the event, the flows it matches, and for each what would happen."""
        event = self.event_for(given)
        matched = {f.name for f in flows_taking(self.config, event)}
        flows: dict[str, Any] = {}
        for flow in self.config.flows:
            if flow.name in matched:
                flows[flow.name] = await self._flow(flow, event, given)
            else:
                flows[flow.name] = {"matched": False, "why_not": why_not(flow, event)}
        return {
            "event": event.model_dump(mode="json"),
            "matched": [f.name for f in self.config.flows if f.name in matched],
            "flows": flows,
        }

    async def _flow(self, flow: FlowConfig, event: CloudEvent, given: FlowInput) -> dict[str, Any]:
        report: dict[str, Any] = {
            "matched": True,
            "lookups": {},
            "model": None,
            "answer": None,
            "dead_letter": None,
            "sinks": None,
        }
        enriched = await self._enrich(flow, event, given, report)
        if enriched is None:
            return report
        result = await self._ask(flow, enriched, given, report)
        if result is not None:
            report["sinks"] = {sink.name: self._sink(sink, result) for sink in flow.sinks}
        return report

    async def _enrich(
        self, flow: FlowConfig, event: CloudEvent, given: FlowInput, report: dict[str, Any]
    ) -> EnrichedEvent | None:
        context = event_context(event)
        enrichment: dict[str, Any] = {}
        called = []
        for lookup in flow.enrich:
            try:
                entry: dict[str, Any] = self.enricher.target_for(flow, lookup, context)
            except HookstreamError as exc:
                report["dead_letter"] = dead_letter("enrich", exc)
                return None
            if lookup.name in given.lookups:
                entry["answer"] = "given"
                enrichment[lookup.name] = entry["value"] = given.lookups[lookup.name]
            elif given.call_lookups and lookup.table is None:  # a table needs Kafka
                entry["answer"] = "called"
                called.append(lookup)
            else:
                entry["answer"] = "not called"
                enrichment[lookup.name] = entry["value"] = None
            report["lookups"][lookup.name] = entry
        if called:
            try:
                fetched = await self.enricher.enrich_for(
                    flow.model_copy(update={"enrich": tuple(called)}), event
                )
            except HookstreamError as exc:
                report["dead_letter"] = dead_letter("enrich", exc)
                return None
            for name, value in fetched.enrichment.items():
                enrichment[name] = report["lookups"][name]["value"] = value
        return EnrichedEvent(flow=flow.name, event=event, enrichment=enrichment)

    def _runtimes(self, given: FlowInput, answers: Sequence[str]) -> dict[str, ProviderRuntime]:
        """Every provider's runtime: its real client (``call_model``), else one answering
        from the given answers."""
        runtimes: dict[str, ProviderRuntime] = {}
        for provider in self.config.providers:
            if given.call_model:
                runtimes[provider.name] = ProviderRuntime.build(provider, self._plain)
                continue
            runtimes[provider.name] = ProviderRuntime(
                provider,
                _GivenAnswers(provider, answers),
                RateBudget(provider.budget),
                CircuitBreaker(provider.name, provider.breaker),
            )
        return runtimes

    async def _ask(
        self, flow: FlowConfig, enriched: EnrichedEvent, given: FlowInput, report: dict[str, Any]
    ) -> AIResult | None:
        """The flow's result: its one AI task's, its steps' in order (each reported under
        ``steps``), or its ``output`` mapping's (no AI step)."""
        if not flow.tasks:
            try:
                output = transformed(flow, enriched)
            except HookstreamError as exc:
                report["dead_letter"] = dead_letter("ai", exc)
                return None
            report["answer"] = {
                "from": "output",
                "output": output.output,
                "reasked": False,
                "fallback": False,
            }
            return output
        if flow.ai is not None:
            return await self._ask_task(flow, None, enriched, given, given.answers, {}, report)
        report["steps"] = {}
        answered: dict[str, AIResult] = {}
        for step, _ in flow.tasks:
            part: dict[str, Any] = {"model": None, "answer": None, "dead_letter": None}
            report["steps"][step] = part
            texts = _step_answers(given.answers, step)
            earlier = {name: r.output for name, r in answered.items()}
            result = await self._ask_task(flow, step, enriched, given, texts, earlier, part)
            if result is None:
                report["dead_letter"] = part["dead_letter"]
                return None
            answered[str(step)] = result
        return combined(flow, enriched, answered)

    async def _ask_task(
        self,
        flow: FlowConfig,
        step: str | None,
        enriched: EnrichedEvent,
        given: FlowInput,
        answers: Sequence[str],
        earlier: Mapping[str, Any],
        report: dict[str, Any],
    ) -> AIResult | None:
        """One AI task (the flow's ``ai``, or its step ``step`` seeing ``earlier``)."""
        task = AITask(flow, self._runtimes(given, answers), self.config.worker, step=step)
        try:
            requests = task.requests_for(enriched, earlier)
        except HookstreamError as exc:
            report["dead_letter"] = dead_letter("ai", exc)
            return None
        target, request = task.chain[0], requests[0]
        client = client_for(target.runtime.config, self._plain)  # for its URL and body only
        http = client if isinstance(client, HttpChatClient) else None
        report["model"] = {
            "provider": target.runtime.config.name,
            "model": request.model,
            "url": http.url if http is not None else None,
            "system": request.system,
            "prompt": request.prompt,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "payload": http.payload(request) if http is not None else None,
            "fallbacks": [f"{t.runtime.config.name}/{t.model}" for t in task.chain[1:]],
        }
        if not given.call_model and not answers:
            return None
        try:
            outcome = await task.run(enriched, requests)
        except RetriesExhausted as exc:
            report["dead_letter"] = dead_letter("ai", exc.last)
            return None
        result = outcome.result
        report["answer"] = {
            "from": "model" if given.call_model else given.answers_from,
            "provider": result.provider,
            "model": result.model,
            "output": result.output,
            "reasked": result.reasked,
            "fallback": result.fallback,
        }
        return result

    def _sink(self, sink: SinkConfig, result: AIResult) -> dict[str, Any]:
        key = idempotency_key(result, sink.name)
        delivery = Delivery(result, key, sink_context(result))
        if not sink.when_holds(delivery.context):
            return {"kind": sink.kind, "skipped": f"when is false: {_compact(sink.when)}"}
        try:
            if isinstance(sink, HttpSinkConfig):
                url, headers, body = http_request(sink, templates.parse(sink.url), delivery)
                if sink.api_key_env or sink.api_key_file:
                    headers["Authorization"] = f"Bearer {HIDDEN}"
                return {
                    "kind": "http",
                    "method": sink.method,
                    "url": url,
                    "headers": headers,
                    "body": body,
                }
            if isinstance(sink, SlackSinkConfig):
                text = templates.parse(sink.text)
                return {
                    "kind": "slack",
                    "method": "POST",
                    "url": f"{HIDDEN} (the webhook URL in {secret_origin(sink, 'webhook_url')})",
                    "headers": {"Idempotency-Key": key},
                    "body": slack_message(sink, text, delivery.context),
                }
            return {
                "kind": "postgres",
                "table": sink.table,
                "key": list(sink.key),
                "row": postgres_row(sink, delivery.context),
            }
        except HookstreamError as exc:
            return {"kind": sink.kind, "dead_letter": dead_letter("sink", exc)}


def _step_answers(answers: Sequence[str], step: str | None) -> list[str]:
    """A step's answers out of the given ones, each a JSON mapping by step name: the
    step's value (text as is, anything else as JSON); none when a mapping lacks the step."""
    texts: list[str] = []
    for text in answers:
        try:
            by_step = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(by_step, dict) or step not in by_step:
            return texts
        value = by_step[step]
        texts.append(value if isinstance(value, str) else orjson.dumps(value).decode())
    return texts
