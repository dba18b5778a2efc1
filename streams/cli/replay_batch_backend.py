"""The AI stage's side of ``hookstream replay --batch`` (:mod:`streams.ops.replay_batch`), wired
here because only the CLI may join ``agents`` and ``streams.ops``.

Every decision is the AI stage's own code, so a batch replay answers what the worker would:
the request is rendered by :meth:`~agents.ai.task.AITask.requests_for`, the answer cache is
asked through :meth:`~agents.ai.task.AITask.cached` (the worker's ``<prefix>.ai-cache``, read
by :class:`streams.cli.replay_cost.ReplayPricer`), the answer is checked by
:func:`~agents.ai.output.parse_output` against the flow's schema, and the result is the
worker's :class:`~schemas.events.AIResult` with ``cost_usd`` at the model's
``batch_price_factor`` of the price table (0.5 unless set).

What differs from the synchronous path, on purpose: only the flow's primary provider and
model are asked (a job is one provider's; fallbacks answer outages, and a batch has a day);
an answer the schema refuses is not re-asked (a re-ask is another paid request, in another
job) but dead-lettered with its validation errors, like a line that failed.

Each paid answer's answer-cache entry is the AI stage's (:func:`~agents.ai.task.cache_entry`
under :meth:`~agents.ai.provider.ChatRequest.cache_key` of the request the job line carried,
in the worker's ``<prefix>.ai-cache`` map record), written once its result is on Kafka: a later
synchronous replay, or a worker asked the same request, is answered from it without a call.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from agents.ai.batch import BatchAPI, batch_api_for
from agents.ai.output import parse_output
from agents.ai.provider import ChatRequest
from agents.ai.task import AITask, ProviderRuntime, cache_entry
from agents.outbound.http import new_session
from agents.state.durable_map import map_value, topic_configs
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import HookstreamError, InvalidModelOutput, RemoteError, ToolError
from schemas.events import AIResult, EnrichedEvent
from schemas.topics import Topics
from streams.kafka.reader import Position
from streams.ops.replay_batch import BatchReplayer, Plan, Status


class BatchBackend:
    """Implements :class:`streams.ops.replay_batch.BatchBackend`; ``cache``: the answer cache
    (a mapping of cache key to entry, or None when the flows do not cache)."""

    def __init__(
        self,
        config: HookstreamConfig,
        runtimes: Mapping[str, ProviderRuntime],
        session: aiohttp.ClientSession,
        cache: Any = None,
    ) -> None:
        self.tasks = {
            f.name: AITask(f, runtimes, config.worker) for f in config.flows if f.ai is not None
        }
        self.runtimes = runtimes
        self.apis: dict[str, BatchAPI] = {
            p.name: batch_api_for(p, session) for p in config.providers
        }
        self.cache = cache
        self.cache_name = Topics(config.kafka.topic_prefix).ai_cache
        self.cache_ttl_s = config.worker.ai_cache.ttl_s

    def plan(self, flow: FlowConfig, value: dict[str, Any]) -> Plan:
        task = self.tasks[flow.name]
        try:
            enriched = EnrichedEvent.model_validate(value)
            requests = task.requests_for(enriched)
        except HookstreamError as exc:  # a template the event cannot fill: dead-lettered
            return Plan("invalid", error=exc)
        except ValueError as exc:  # pydantic's ValidationError: not an enriched record
            return Plan("invalid", error=exc)
        cached = task.cached(enriched, self.cache, requests)
        if cached is not None:
            return Plan("cached", result=cached.model_dump_json().encode())
        return Plan("call", provider=task.chain[0].runtime.config.name, request=requests[0])

    async def submit(
        self,
        provider: str,
        lines: Sequence[tuple[str, Any]],
        label: str,
        intent_at: tuple[float, float],
    ) -> str:
        requests: list[tuple[str, ChatRequest]] = list(lines)
        return await self.apis[provider].submit(requests, label, intent_at)

    async def find(
        self, provider: str, label: str, lines: int, since_s: float, known: set[str]
    ) -> str | None:
        return await self.apis[provider].find(label, lines, since_s, known)

    def submit_within_s(self) -> float:
        return max((api.submit_within_s() for api in self.apis.values()), default=0.0)

    async def status(self, provider: str, job_id: str) -> Status:
        found = await self.apis[provider].status(job_id)
        return Status(found.state, found.ended)

    def cache_topic(self) -> tuple[str, dict[str, str]] | None:
        if not any(task.flow.ai.cache for task in self.tasks.values()):
            return None
        return self.cache_name, topic_configs(self.cache_ttl_s)

    def cache_record(
        self, flow: FlowConfig, value: dict[str, Any], result: bytes
    ) -> tuple[bytes, bytes] | None:
        """The AI stage's entry for a paid answer (:meth:`agents.stages.ai.AIStage._write`):
        keyed by the primary target's request, the request a job line carried."""
        task = self.tasks[flow.name]
        if not task.flow.ai.cache:
            return None
        answered = AIResult.model_validate_json(result)
        if answered.cached:
            return None
        request = task.requests_for(EnrichedEvent.model_validate(value))[0]
        key = request.cache_key(task.chain[0].runtime.config.name)
        return key.encode(), map_value(cache_entry(answered), time.time())

    async def results(
        self,
        provider: str,
        job_id: str,
        answered: Mapping[str, tuple[FlowConfig, dict[str, Any]]],
        latency_ms: float,
    ) -> dict[str, bytes | BaseException]:
        lines = await self.apis[provider].results(job_id)
        runtime = self.runtimes[provider]
        outcomes: dict[str, bytes | BaseException] = {}
        for cid, (flow, value) in answered.items():
            line = lines.get(cid)
            if line is None:
                continue
            if line.content is None or line.usage is None:
                outcomes[cid] = RemoteError(
                    f"provider {provider}: batch job {job_id}: {line.error}", stage="ai"
                )
                continue
            task = self.tasks[flow.name]
            try:
                output = parse_output(task.output_model, line.content)
            except InvalidModelOutput as exc:
                outcomes[cid] = exc
                continue
            enriched = EnrichedEvent.model_validate(value)
            model = task.chain[0].model
            result = AIResult(
                flow=flow.name,
                event=enriched.event,
                enrichment=enriched.enrichment,
                provider=provider,
                model=line.model or model,
                output=output,
                usage=line.usage,
                latency_ms=latency_ms,
                attempts=1,
                cost_usd=runtime.cost_usd(model, line.model, line.usage, batch=True),
            )
            outcomes[cid] = result.model_dump_json().encode()
        return outcomes


def batch_replay_id(args: Any, topic: str) -> str:
    """``--batch-id``, else one derived from the arguments: the same command resumes."""
    if args.batch_id:
        return str(args.batch_id)
    identity = orjson.dumps([topic, args.from_, args.to, args.flow])
    return "batch-" + hashlib.sha256(identity).hexdigest()[:12]


async def run_batch_replay(
    config: HookstreamConfig,
    args: Any,
    topic: str,
    start: Position,
    end: Position | None,
    cache: Any,
) -> int:
    """``hookstream replay --batch``: run (or resume) the batch replay, print what it did."""
    if args.source is not None or args.type is not None:
        raise ToolError("--batch selects by --flow only (--source and --type: without --batch)")
    replay_id = batch_replay_id(args, topic)
    async with new_session() as session:
        runtimes = {p.name: ProviderRuntime.build(p, session) for p in config.providers}
        backend = BatchBackend(config, runtimes, session, cache)
        replayer = BatchReplayer(
            config,
            topic,
            backend,
            replay_id=replay_id,
            start=start,
            end=end,
            flow=args.flow,
            poll_s=args.poll_s,
        )

        def say(text: str) -> None:
            print(f"replay {replay_id}: {text}", file=sys.stderr, flush=True)

        stats = await replayer.run(say)
    if stats.already_finished:
        print(f"replay {replay_id}: already finished (its journal says so); nothing to do")
        return 0
    jobs = ", ".join(f"{job.provider}:{job.job_id}" for job in stats.jobs) or "none"
    print(
        f"replay {replay_id} (batch): window {stats.window:,}, {stats.cached:,} from the AI "
        f"cache, {stats.submitted:,} request(s) submitted, {stats.resumed:,} resumed from "
        f"earlier job(s) ({stats.found} found by listing the provider's jobs); jobs {jobs}; "
        f"{stats.results:,} result(s) written ({stats.cache_entries:,} answer(s) added to the "
        f"AI cache), "
        f"{stats.dead_lettered:,} dead-lettered; ${stats.cost_usd:,.4f} at batch prices; "
        f"{stats.elapsed_s:.1f} s"
    )
    if stats.not_batchable:
        print(
            f"replay {replay_id}: {stats.not_batchable:,} record(s) of flows with several AI "
            "steps or none were left alone: replay them without --batch (--flow NAME)"
        )
    return 0
