"""``hookstream dlq list|show|redrive``: read the dead-letter topic and send records back.

A dead letter is the failed record's original value with its error context in headers
(:class:`schemas.events.DeadLetter`). Listing and redriving filter on the stage, the error class,
the flow (``hookstream-flow`` header, else the value's ``flow``) and the last failure's time.

Redrive writes each matching record's original key and value to its stage's input topic (the
``original_topic`` header), with the record's non-DLQ headers and ``hookstream-redriven:
<partition>:<offset>``; a dead letter written without its value (``value_omitted``: the
original was over the DLQ topic's limit) sends the original, read at its coordinates. Then —
once Kafka acknowledged that write — it remembers those DLQ
coordinates in the compacted topic ``<prefix>.dlq-redriven``. A second run — with the same or
wider filters — skips what is remembered, so each dead letter is redriven once.

A write that misses its deadline is not given up: the idempotent producer still holds it and
delivers it when the broker answers again, so the redrive waits on that same write (the rule of
agents/emit.py) rather than failing, which left a record that landed later unremembered and
redriven a second time by the next run. It stops only once the producer gave the write up
(nothing more of it can land; see ``PendingWrite``): running it again then adds no copy. (A run
killed while it waits, or between the two writes, can still redrive one record twice; the event
id makes that harmless downstream.)

A record its topic refuses as too large (``max.message.bytes``, e.g. a replay's dead letter
redriven before the limit was raised) is skipped, not marked redriven, and the others are
sent; the run then fails with :class:`~schemas.errors.LettersRefused` naming each one, its topic
and the limit. Before, the first such record stopped the run with "check that Kafka runs".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata, TopicPartition
from pydantic import ValidationError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, LettersRefused, RecordTooLarge, ToolError
from schemas.events import DLQ_HEADER_PREFIX, DeadLetter
from schemas.headers import REDRIVEN_HEADER
from schemas.topics import Topics
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.producer import Headers, KafkaWriter
from streams.kafka.reader import new_consumer, read_window, window

log = logging.getLogger(__name__)
# The largest produce request a redrive sends: 64 MiB, under the broker's default
# socket.request.max.bytes (100 MiB); the topic's max.message.bytes is the real bound.
REDRIVE_REQUEST_BYTES = 64 * 1024 * 1024


async def write_acknowledged(
    writer: KafkaWriter,
    topic: str,
    value: bytes,
    *,
    key: bytes | None,
    headers: Headers = (),
    what: str,
) -> RecordMetadata:
    """Write one record and wait until Kafka acknowledges it, however long the outage.

    A timeout only means waiting again on the same write: the producer retries it with the
    same sequence numbers, so it lands once. Raises BrokerUnavailable when the producer did not
    take the record or gave it up; nothing of it is on Kafka then (``what`` names it).
    """
    pending = await writer.write(topic, value, key=key, headers=headers)
    while True:
        try:
            return await writer.outcome(pending)
        except BrokerUnavailable as exc:
            if pending.given_up:
                raise BrokerUnavailable(
                    f"Kafka failed {what} ({exc}); it was not written: run the redrive again"
                ) from exc
            log.warning("waiting for Kafka to acknowledge %s (%s)", what, exc)


@dataclass(frozen=True, slots=True)
class DLQFilter:
    stage: str | None = None
    error_class: str | None = None
    flow: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DLQEntry:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    letter: DeadLetter | None
    flow: str | None
    sink: str | None
    redriven: bool = False

    @property
    def coordinates(self) -> str:
        return f"{self.partition}:{self.offset}"

    def matches(self, f: DLQFilter) -> bool:
        letter = self.letter
        if letter is None:
            return f == DLQFilter()
        if f.stage is not None and letter.stage != f.stage:
            return False
        if f.error_class is not None and letter.error_class != f.error_class:
            return False
        if f.flow is not None and self.flow != f.flow:
            return False
        if f.since is not None and letter.last_failure_at < f.since:
            return False
        return f.until is None or letter.last_failure_at < f.until

    def as_json(self, *, with_value: bool = False) -> dict[str, Any]:
        letter = self.letter.model_dump(mode="json", exclude={"original"}) if self.letter else {}
        out: dict[str, Any] = {
            "dlq": self.coordinates,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "flow": self.flow,
            "sink": self.sink,
            "redriven": self.redriven,
            **letter,
        }
        if with_value:
            out["headers"] = {k: v.decode(errors="replace") for k, v in self.headers}
            try:
                out["value"] = orjson.loads(self.value or b"null")
            except orjson.JSONDecodeError:
                out["value"] = (self.value or b"").decode(errors="replace")
        return out


def _entry(record: Any, redriven: set[str]) -> DLQEntry:
    headers = [(k, bytes(v)) for k, v in record.headers]
    named = dict(headers)
    try:
        original = orjson.loads(record.value or b"null")
    except orjson.JSONDecodeError:
        original = None
    try:
        letter: DeadLetter | None = DeadLetter.from_headers(headers, None)
    except ValidationError:
        letter = None
    flow = named.get("hookstream-flow")
    flow_name = flow.decode(errors="replace") if flow is not None else None
    if flow_name is None and isinstance(original, dict) and isinstance(original.get("flow"), str):
        flow_name = original["flow"]
    sink = named.get("hookstream-sink")
    coordinates = f"{record.partition}:{record.offset}"
    return DLQEntry(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=headers,
        letter=letter,
        flow=flow_name,
        sink=sink.decode(errors="replace") if sink is not None else None,
        redriven=coordinates in redriven,
    )


class DeadLetters:
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)

    async def _read(self, topic: str) -> AsyncIterator[Any]:
        consumer = new_consumer(self.settings)
        try:
            await consumer.start()
            win = await window(consumer, topic)
            async for batch in read_window(consumer, win):
                for record in batch:
                    yield record
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read {topic}: {exc}") from exc
        finally:
            await consumer.stop()

    async def redriven(self) -> set[str]:
        """DLQ coordinates already redriven (the compacted memory topic)."""
        return {
            record.key.decode()
            async for record in self._read(self.topics.dlq_redriven)
            if record.key is not None and record.value is not None
        }

    async def entries(self, selection: DLQFilter | None = None) -> list[DLQEntry]:
        # The DLQ first: a missing prefix or an unreachable broker is then reported on the
        # topic the operator asked about, not on the redriven memory read beside it.
        records = [record async for record in self._read(self.topics.dlq)]
        done = await self.redriven()
        found = []
        for record in records:
            entry = _entry(record, done)
            if selection is None or entry.matches(selection):
                found.append(entry)
        return found

    async def get(self, coordinates: str) -> DLQEntry:
        try:
            partition, offset = (int(part) for part in coordinates.split(":"))
        except ValueError:
            raise ToolError(f"{coordinates!r}: give the record as PARTITION:OFFSET") from None
        for entry in await self.entries():
            if (entry.partition, entry.offset) == (partition, offset):
                return entry
        raise ToolError(f"no dead letter at {coordinates} in {self.topics.dlq}")

    async def _original_value(self, letter: DeadLetter) -> bytes:
        """The value of a dead letter written without it (``value_omitted``: it was over the
        DLQ topic's limit), read where the stage read it."""
        tp = TopicPartition(letter.original_topic, letter.original_partition)
        where = f"{tp.topic}[{tp.partition}]@{letter.original_offset}"
        consumer = new_consumer(self.settings)
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, letter.original_offset)
            fetched = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read the original at {where}: {exc}") from exc
        finally:
            await consumer.stop()
        records = fetched.get(tp, [])
        if not records or records[0].offset != letter.original_offset:
            raise ToolError(
                f"a dead letter's value was too large for its DLQ, and its original at {where} "
                "is no longer on Kafka (the topic's retention): it cannot be redriven"
            )
        value: bytes = records[0].value or b""
        return value

    async def redrive(
        self, selection: DLQFilter, *, dry_run: bool = False
    ) -> tuple[list[DLQEntry], int]:
        """Send matching, not yet redriven records back; return (redriven, already done)."""
        entries = await self.entries(selection)
        todo = [e for e in entries if not e.redriven and e.letter is not None]
        already = sum(1 for e in entries if e.redriven)
        if dry_run or not todo:
            return todo, already
        done: list[DLQEntry] = []
        refused: list[str] = []
        # The batching writer: a record over its topic's max.message.bytes is refused naming
        # the topic and the limit (streams.kafka.size_limits), the producer left whole. Its
        # requests may be larger than the pipeline's 1 MiB: a letter is redriven once its
        # topic's limit was raised for it, whatever the new limit.
        async with BatchingKafkaWriter(
            self.settings, client_id="hookstream-dlq", max_request_bytes=REDRIVE_REQUEST_BYTES
        ) as writer:
            for entry in todo:
                assert entry.letter is not None  # noqa: S101 - filtered just above
                headers = [
                    (k, v)
                    for k, v in entry.headers
                    if not k.startswith(DLQ_HEADER_PREFIX) and k != REDRIVEN_HEADER
                ]
                headers.append((REDRIVEN_HEADER, entry.coordinates.encode()))
                target = entry.letter.original_topic
                value = entry.value or b""
                if entry.letter.value_omitted is not None:  # too large for the DLQ itself
                    value = await self._original_value(entry.letter)
                try:
                    await write_acknowledged(
                        writer,
                        target,
                        value,
                        key=entry.key,
                        headers=headers,
                        what=f"the redrive of {self.topics.dlq} {entry.coordinates} to {target}",
                    )
                except RecordTooLarge as exc:
                    refused.append(f"{self.topics.dlq} {entry.coordinates} → {target}: {exc}")
                    continue
                memo = {"redriven_at": datetime.now(UTC).isoformat(), "to": target}
                await write_acknowledged(
                    writer,
                    self.topics.dlq_redriven,
                    orjson.dumps(memo),
                    key=entry.coordinates.encode(),
                    what=f"the memo that {self.topics.dlq} {entry.coordinates} was redriven",
                )
                done.append(entry)
        if refused:
            raise LettersRefused(
                f"redrove {len(done)}; {len(refused)} not written, too large: "
                + "; ".join(refused)
                + ". Raise the topic's max.message.bytes (docs/operations.md#dead-letters), "
                "then redrive again: those are not marked redriven"
            )
        return done, already
