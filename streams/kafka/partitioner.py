"""Kafka's default partitioner (murmur2 of the key), the same partitions as aiokafka's, cheaper.

Every record hookstream writes has a key, and aiokafka's ``DefaultPartitioner`` hashes it with a
pure-Python murmur2 that reads the key a byte at a time: ~2 % of the worker's CPU in the
profile of issue 16, when the worker wrote five keyed records per event (3.2-3.4 since: the
enriched event, the result, the cache entry, and done marks several to a record). :func:`murmur2` here reads the key's 4-byte words with one ``struct`` call and does the
same arithmetic on them, with one mask per step instead of one per operation; for a record's
key (20-80 bytes) it takes about half of aiokafka's time (0.49-0.53x in timeit, 1,000 random
keys of 20, 48 and 80 bytes, best of 5). It is the same function: the unit
test compares both over random keys of every length, since a different partition for a key
would break per-key order and every lookup that computes a key's partition
(``agents.state.delivered``, ``streams.ops.trace``).

A key's partition is not remembered between records: most of the worker's keys are unique (each
event's marks and cache entries), so a memory of them would only grow; hashing is cheap enough.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# The unpacking format for n words, made once per length (keys come in a few lengths).
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``), as
    :func:`aiokafka.partitioner.murmur2` computes it: unsigned 32 bits."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        unpack = _WORDS.get(words)
        if unpack is None:
            unpack = _WORDS[words] = struct.Struct(f"<{words}I")
        for k in unpack.unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        end = length & ~3
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class KeyPartitioner:
    """aiokafka's ``DefaultPartitioner`` with :func:`murmur2` (``AIOKafkaProducer(partitioner=)``):
    a keyed record goes to ``murmur2(key) & 0x7fffffff`` modulo the topic's partition count, a
    record without a key to a random available partition."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311 - spreading load
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]
