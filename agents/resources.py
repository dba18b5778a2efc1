"""The per-process connections the agents share: one HTTP session, one Kafka writer and, in the
worker, its durable maps (dedupe and the AI answer cache, :mod:`agents.state.durable_map`) and
the lookup tables its flows read (:mod:`agents.state.table`).

Reference-counted (:class:`agents.refcount.RefCounted`): the first agent to enter starts them,
the last to leave closes them.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import aiohttp

from agents.outbound.egress_guard import NetGuard
from agents.outbound.http import new_session
from agents.refcount import RefCounted
from agents.state.answers import AnswerJournal, marker_of
from agents.state.durable_map import DurableMap
from agents.state.recovery import results_since_last_commit
from agents.state.table import KafkaTable
from schemas.config import HookstreamConfig
from schemas.topics import Topics
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.producer import KafkaWriter


class Resources(RefCounted):
    def __init__(
        self,
        config: HookstreamConfig,
        *,
        client_id: str,
        state: bool = False,
        journal_dir: Path | None = None,
    ) -> None:
        """``journal_dir``: where the worker journals model answers (:mod:`agents.state.answers`);
        None: no journal."""
        super().__init__()
        self.config = config
        self.client_id = client_id
        self._session: aiohttp.ClientSession | None = None
        self._guarded_session: aiohttp.ClientSession | None = None
        self._writer: KafkaWriter | None = None
        self.maps: list[DurableMap] = []
        # By topic; the worker's only (the enrich stage reads them), loaded in _start.
        self.tables: dict[str, KafkaTable] = {}
        if state:
            topics = Topics(config.kafka.topic_prefix)
            worker = config.worker
            self.dedupe: DurableMap | None = DurableMap(
                config.kafka,
                topics.dedupe,
                ttl_s=worker.dedupe.ttl_s,
                cleanup_interval_s=worker.dedupe.cleanup_interval_s,
            )
            self.ai_cache: DurableMap | None = DurableMap(
                config.kafka,
                topics.ai_cache,
                ttl_s=worker.ai_cache.ttl_s,
                cleanup_interval_s=worker.ai_cache.cleanup_interval_s,
            )
            self.maps = [self.dedupe, self.ai_cache]
            self.tables = tables_of(config)
        else:
            self.dedupe = self.ai_cache = None
        self.answers: AnswerJournal | None = None
        if state and journal_dir is not None and config.worker.answer_journal:
            self.answers = AnswerJournal(journal_dir, max_age_s=config.worker.dedupe.ttl_s)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Resources used outside `async with`")
        return self._session

    @property
    def guarded_session(self) -> aiohttp.ClientSession:
        """The session for calls the SSRF guard covers: it connects to public addresses only."""
        if self._guarded_session is None:
            raise RuntimeError("Resources used outside `async with`")
        return self._guarded_session

    def session_for(self, guard: NetGuard) -> aiohttp.ClientSession:
        """The session a call under ``guard`` goes through (``allow_private``: the plain one)."""
        return self.session if guard.allow_private else self.guarded_session

    @property
    def writer(self) -> KafkaWriter:
        if self._writer is None:
            raise RuntimeError("Resources used outside `async with`")
        return self._writer

    async def _recover_markers(self, dedupe: DurableMap) -> None:
        """Mark results a crash left without their marker (:mod:`agents.state.recovery`)."""
        topics = Topics(self.config.kafka.topic_prefix)
        done = await results_since_last_commit(
            self.config.kafka,
            group=self.client_id,
            enriched=topics.enriched,
            results=topics.results,
        )
        for key in done:
            dedupe.remember(key, 1)

    async def _start(self) -> None:
        """Start everything; on a failure (a table topic missing, the broker down) stop what
        started, so that the agent's restart by Faust, which enters again, starts it anew."""
        try:
            await self._start_all()
        except BaseException:
            await self._stop()
            raise

    async def _start_all(self) -> None:
        # Writes in rounds, a batch per partition (streams.kafka.batch_writer says why).
        writer = BatchingKafkaWriter(self.config.kafka, client_id=self.client_id)
        await writer.start()
        self._writer = writer
        connect_timeout_s = self.config.worker.http_connect_timeout_s
        self._session = new_session(connect_timeout_s=connect_timeout_s)
        self._guarded_session = new_session(connect_timeout_s=connect_timeout_s, public_only=True)
        # Loaded to the end before any agent handles an event (like table recovery).
        for durable_map in self.maps:
            await durable_map.start()
        # Every table read to its end too: no event is joined with a half-loaded table.
        await start_tables(list(self.tables.values()))
        if self.dedupe is not None:
            await self._recover_markers(self.dedupe)
        if self.answers is not None:
            self.answers.open()
            if self.dedupe is not None:
                dedupe = self.dedupe
                recovered = self.answers.recovered
                # A step's answer goes with its event: forgotten once the event is done.
                self.answers.forget([key for key in recovered if marker_of(key) in dedupe])
        # What start-up loaded (modules, config, the maps and tables as read) lives as long as
        # the process: out of the collector's view, so that the collections the events' own
        # garbage sets off do not walk it again each time (as the gateway does).
        gc.freeze()

    async def _stop(self) -> None:
        if self.answers is not None:
            self.answers.close()
        for durable_map in self.maps:
            await durable_map.stop()
        for table in self.tables.values():
            await table.stop()
        sessions = (self._session, self._guarded_session)
        writer = self._writer
        self._session = self._guarded_session = None
        self._writer = None
        for session in sessions:
            if session is not None:
                await session.close()
        if writer is not None:
            await writer.stop()


async def start_tables(tables: list[KafkaTable]) -> None:
    """Load the tables concurrently; when one fails, the others' loads are cancelled (each
    stops its reader) before the error is raised."""
    loads = [asyncio.create_task(table.start(), name=f"load {table.topic}") for table in tables]
    try:
        await asyncio.gather(*loads)
    except BaseException:
        for load in loads:
            load.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        raise


def tables_of(config: HookstreamConfig) -> dict[str, KafkaTable]:
    """One table per topic the flows' lookups read, whatever number of lookups share it."""
    users: dict[str, list[str]] = {}
    timeouts_s: dict[str, float] = {}
    for i, flow in enumerate(config.flows):
        for j, lookup in enumerate(flow.enrich):
            if lookup.table is not None:
                topic = lookup.table.topic
                users.setdefault(topic, []).append(f"flows[{i}].enrich[{j}].table")
                timeout_s = lookup.table.partitions_timeout_s
                timeouts_s[topic] = max(timeouts_s.get(topic, timeout_s), timeout_s)
    return {
        topic: KafkaTable(
            config.kafka,
            topic,
            used_by=", ".join(fields),
            partitions_timeout_s=timeouts_s[topic],
        )
        for topic, fields in users.items()
    }
