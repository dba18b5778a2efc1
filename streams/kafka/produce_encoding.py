"""A produce request encoded with one copy of its record batches instead of six, and its
response decoded in one pass.

aiokafka encodes a request by nesting: each record batch is joined into its partition's
entry, that into the partition array, the topic entry, the topic array and the request
(``Schema.encode``, ``Array.encode``, ``Bytes.encode``: ``b"".join`` or ``+`` at every level),
and the connection adds the header and the size in front (two more copies). :func:`install`
gives the produce request structs an ``encode`` that collects the fields and the batches in one
list and joins it once: byte for byte the same request
(tests/unit/streams/kafka/test_produce_encoding.py compares them for every version). 12
requests of 4 x 1 MiB took 60 ms of CPU instead of 120 (fresh buffers' page faults included);
a 100,000-event replay (45 MB in 19 requests of 2.4 MB on average) used ~0.02-0.03 s less CPU
(medians of 8 interleaved runs on a loaded machine: bench/replay, issue 16).

The response: aiokafka decodes it field by field (``Struct.decode``: a ``BytesIO.read`` and a
``struct.unpack`` per integer, a generator per array), ~9 µs per partition in the answer. A
worker's request writes to several topics' partitions at once (enriched, results, the maps):
20 partitions took 185 µs to decode on a loaded machine. :func:`install` gives the produce
responses of v5-v8 (what a broker of Kafka 2.1 or later answers) a ``decode`` reading the
partitions with one ``struct.unpack_from`` each, into the same structure
(tests/unit/streams/kafka/test_produce_encoding.py compares them).

aiokafka 0.14 internals (``aiokafka.protocol.produce``, pinned in pyproject.toml); installed
for the rest of the process by the processes that write in bulk (the replay). Not by
:class:`streams.kafka.producer.KafkaWriter`: tried in session 12, a request ~20 µs cheaper
made the gateway's requests smaller and more frequent, the broker's CPU per webhook rose 1.6x
in 3 wrk runs and the gateway's own did not fall; the worker showed no gain.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from aiokafka.protocol import produce

_HI = struct.Struct(">hi").pack  # required_acks, timeout
_I = struct.Struct(">i").pack  # an array's length
_II = struct.Struct(">ii").pack  # a partition and its batch's length
_H = struct.Struct(">h").pack  # a string's length

# The versions whose schema this encodes: v0's (v1 and v2 share it) and v3's, which starts with
# the transactional_id (v4-v8 share it). A later version with another schema (the flexible
# ones: compact strings, tagged fields) keeps aiokafka's own encoding.
_SCHEMAS = (produce.ProduceRequest_v0.SCHEMA, produce.ProduceRequest_v3.SCHEMA)
_VERSIONS: tuple[Any, ...] = tuple(
    version
    for version in (getattr(produce, name) for name in dir(produce))
    if isinstance(version, type)
    and version.__name__.startswith("ProduceRequest_v")
    and any(getattr(version, "SCHEMA", None) is schema for schema in _SCHEMAS)
)


def _string(value: str | None) -> bytes:
    """``String("utf-8").encode``: a length (-1 for None) and the UTF-8 bytes."""
    if value is None:
        return _H(-1)
    encoded = str(value).encode("utf-8")
    return _H(len(encoded)) + encoded


def _encode(request: Any) -> bytes:
    """The request's fields in schema order, each batch appended as it is, joined once."""
    chunks: list[Any] = []
    if request.API_VERSION >= 3:
        chunks.append(_string(request.transactional_id))
    chunks.append(_HI(request.required_acks, request.timeout))
    topics = request.topics
    if topics is None:
        chunks.append(_I(-1))
        return b"".join(chunks)
    chunks.append(_I(len(topics)))
    for topic, partitions in topics:
        chunks.append(_string(topic))
        if partitions is None:
            chunks.append(_I(-1))
            continue
        chunks.append(_I(len(partitions)))
        for partition, batch in partitions:
            if batch is None:
                chunks.append(_II(partition, -1))
            else:
                chunks.append(_II(partition, len(batch)))
                chunks.append(batch)
    return b"".join(chunks)


_PARTITION_V5 = struct.Struct(">ihqqq")  # partition, error_code, offset, timestamp, log start
_INT16 = struct.Struct(">h").unpack_from
_INT32 = struct.Struct(">i").unpack_from


def _decode_string(raw: bytes, at: int) -> tuple[str | None, int]:
    (length,) = _INT16(raw, at)
    at += 2
    if length < 0:
        return None, at
    end = at + length
    if end > len(raw):
        raise ValueError("Buffer underrun decoding string")
    return raw[at:end].decode("utf-8"), end


def _decode_partitions_v8(raw: bytes, at: int, count: int) -> tuple[list[Any], int]:
    partitions: list[Any] = []
    unpack = _PARTITION_V5.unpack_from
    for _ in range(count):
        fixed = unpack(raw, at)
        at += _PARTITION_V5.size
        (errors_count,) = _INT32(raw, at)
        at += 4
        record_errors: list[Any] | None = None
        if errors_count != -1:
            record_errors = []
            for _ in range(errors_count):
                (index,) = _INT32(raw, at)
                message, at = _decode_string(raw, at + 4)
                record_errors.append((index, message))
        error_message, at = _decode_string(raw, at)
        partitions.append((*fixed, record_errors, error_message))
    return partitions, at


def _decode_response(cls: Any, data: BytesIO | bytes) -> Any:
    """A produce response of v5-v8 as aiokafka's ``Struct.decode`` gives it (lists for
    arrays, tuples for their entries, None for a null array or string), read from ``data``'s
    position, which is left after the response as aiokafka's leaves it."""
    if isinstance(data, bytes):
        data = BytesIO(data)
    raw = data.getvalue()
    at = data.tell()
    v8 = cls.API_VERSION >= 8
    try:
        (topic_count,) = _INT32(raw, at)
        at += 4
        topics: list[Any] | None = None
        if topic_count != -1:
            topics = []
            for _ in range(topic_count):
                topic, at = _decode_string(raw, at)
                (count,) = _INT32(raw, at)
                at += 4
                partitions: list[Any] | None = None
                if count != -1 and v8:
                    partitions, at = _decode_partitions_v8(raw, at, count)
                elif count != -1:
                    unpack = _PARTITION_V5.unpack_from
                    size = _PARTITION_V5.size
                    partitions = [unpack(raw, at + i * size) for i in range(count)]
                    at += count * size
                topics.append((topic, partitions))
        (throttle_time_ms,) = _INT32(raw, at)
        at += 4
    except struct.error as exc:  # aiokafka's own decoding raises ValueError on a short buffer
        raise ValueError(f"Buffer underrun decoding a produce response: {exc}") from exc
    data.seek(at)
    return cls(topics, throttle_time_ms)


_RESPONSES: tuple[Any, ...] = tuple(
    getattr(produce, f"ProduceResponse_v{n}")
    for n in range(5, 9)
    if hasattr(produce, f"ProduceResponse_v{n}")
    and getattr(produce, f"ProduceResponse_v{n}").SCHEMA
    in (produce.ProduceResponse_v5.SCHEMA, produce.ProduceResponse_v8.SCHEMA)
)
_DECODE = classmethod(_decode_response)


def install() -> None:
    """Encode every produce request of this process with :func:`_encode` and decode every
    v5-v8 produce response with :func:`_decode_response` (idempotent)."""
    for version in _VERSIONS:
        if version.__dict__.get("encode") is not _encode:
            version.encode = _encode
    for response in _RESPONSES:
        if response.__dict__.get("decode") is not _DECODE:
            response.decode = _DECODE
