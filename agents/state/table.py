"""A lookup table kept in a compacted Kafka topic, held whole by every worker.

A flow's ``enrich: [{name: customer, table: {topic: crm.customers, key: "{{ data.customer_id
}}"}}]`` reads the value of one key (:mod:`agents.outbound.lookups`). The topic is the user's
own (a CRM export, a Debezium change stream): its name is taken as written, without the topic
prefix, and hookstream never writes to it or creates it.

How it is read is how the worker's durable maps are (:mod:`agents.state.durable_map`): one
consumer outside any group, assigned every partition, reads the topic from its beginning to the
end it had at start before :meth:`KafkaTable.start` returns, and the worker's agents start only
after that (:meth:`agents.resources.Resources._start`). So the first event a worker handles is
joined with a table at least as new as the topic was when the worker started, whatever number
of workers run (each holds the whole table) and after every restart (the table is read again).
A tail then follows the topic: a later update reaches a running worker at its next fetch
(each waits at most 100 ms for more records), with no order between it and the events (an
event may be joined with the value just before an update written at the same moment).

Why not Faust's ``GlobalTable``: it is where Faust's reports of records not applied at recovery
(faust-streaming #212) and of not working with several instances (#283) are, it wants
its own changelog topic rather than reading a user's topic, and it stores values through
Faust's codecs rather than plain JSON.

Values are kept as the record's bytes, checked to be JSON when read and parsed at each lookup
(1.4 µs a lookup for 100-byte values): less than half the memory of parsed objects (309
bytes an entry against 722, bench/results/tables.md), and each event gets its own copy. A
record that is not JSON, or has no key, is skipped with a warning and counted
(``hookstream_table_records_total{outcome="invalid"}``); its key keeps the value it had. A
tombstone (null value) deletes the key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from agents import metrics
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.compacted import CompactedReader

log = logging.getLogger(__name__)
# Invalid records are logged one by one up to this many per table, then once per this many.
_WARN_FIRST = 5
_WARN_EVERY = 1000
# A table's updates come at its writer's pace; batching the tail's fetches (64 KiB or 100 ms,
# whichever first) keeps a busy topic from costing one fetch per record, as for the maps.
_TAIL_FETCH_MIN_BYTES = 64 * 1024
_TAIL_FETCH_MAX_WAIT_MS = 100
_MISSING = object()


class KafkaTable:
    """The latest JSON value of each key of ``topic``.

    ``used_by`` names the config fields that read it (e.g. ``flows[0].enrich[1].table``), for
    the error that stops a worker whose table cannot be read. A topic whose partitions are not
    known within ``partitions_timeout_s`` is taken as missing (the worker retries).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        used_by: str = "",
        partitions_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.used_by = used_by
        self.partitions_timeout_s = partitions_timeout_s
        self._data: dict[str, bytes] = {}
        self._reader: CompactedReader | None = None
        self.loaded = False
        self.invalid = 0
        records = metrics.TABLE_RECORDS
        self._upserts = records.labels(topic, "upsert")
        self._tombstones = records.labels(topic, "tombstone")
        self._invalid = records.labels(topic, "invalid")
        metrics.TABLE_ENTRIES.labels(topic).set_function(lambda: len(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        """The key's value (parsed JSON, a new object each call), or ``default``."""
        raw = self._data.get(key)
        if raw is None:
            return default
        return orjson.loads(raw)

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(True, value) when the table holds ``key`` (its value may be JSON null), else
        (False, None)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return False, None
        return True, value

    def apply(self, key: bytes | None, raw: bytes | None) -> None:
        """One record of the topic: set, delete (tombstone) or skip (no key, not JSON)."""
        if key is None:
            self._skip("a record without a key", None)
            return
        name = key.decode(errors="replace")
        if raw is None:
            self._data.pop(name, None)
            self._tombstones.inc()
            return
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._skip("a value that is not JSON", name)
            return
        self._data[name] = raw
        self._upserts.inc()

    def _skip(self, what: str, key: str | None) -> None:
        self.invalid += 1
        self._invalid.inc()
        if self.invalid <= _WARN_FIRST or self.invalid % _WARN_EVERY == 0:
            log.warning(
                "table %s: skipping %s (key %r; %d skipped so far); the key keeps its value",
                self.topic,
                what,
                key,
                self.invalid,
            )

    async def start(self) -> None:
        """Read the topic to the end it has now, then keep following it.

        Raises :class:`BrokerUnavailable` naming the config fields when the topic cannot be
        read (it does not exist, the broker is unreachable); the agent that started the
        worker's resources then crashes, Faust restarts it, and it tries again.
        """
        started_s = time.monotonic()
        reader = CompactedReader(
            self.settings,
            self.topic,
            self.apply,
            client_id=f"hookstream-table-{self.topic}",
            isolation_level="read_committed",
            fetch_min_bytes=_TAIL_FETCH_MIN_BYTES,
            fetch_max_wait_ms=_TAIL_FETCH_MAX_WAIT_MS,
            partitions_timeout_s=self.partitions_timeout_s,
        )
        try:
            await reader.start(load=True)
        except BrokerUnavailable as exc:
            where = f" ({self.used_by})" if self.used_by else ""
            cause = exc.__cause__
            if isinstance(cause, TimeoutError) and not str(cause):
                reason = f"no partitions found in {self.partitions_timeout_s:g} s: does it exist?"
            else:
                reason = str(exc)
            raise BrokerUnavailable(f"table {self.topic}{where}: cannot load it: {reason}") from exc
        self._reader = reader
        self.loaded = True
        elapsed_s = time.monotonic() - started_s
        metrics.TABLE_LOAD_SECONDS.labels(self.topic).set(elapsed_s)
        log.info(
            "table %s: loaded %d records (%d keys) in %.2f s; following it",
            self.topic,
            reader.records_read,
            len(self._data),
            elapsed_s,
        )

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
