"""The cheaper murmur2 partitioner picks aiokafka's partition for every key (a different one
would break per-key order and every lookup that computes a key's partition)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streams.kafka.partitioner import KeyPartitioner, murmur2


def test_murmur2_is_aiokafkas_for_keys_of_every_length() -> None:
    rng = random.Random(16)  # noqa: S311 - test keys, not crypto
    for length in range(160):
        for _ in range(40):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key


def test_partitions_of_the_java_clients_known_keys() -> None:
    # The Java client's partitions for these keys over 1,000 partitions (kafka-python's test).
    keys = [b"", b"a", b"ab", b"abc", b"123456789", b"\x00 "]
    partitions = list(range(1000))
    picked = [KeyPartitioner()(key, partitions, partitions) for key in keys]
    assert picked == [681, 524, 434, 107, 566, 742]


def test_partition_of_a_key_is_aiokafkas() -> None:
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    rng = random.Random(7)  # noqa: S311 - test keys, not crypto
    for count in (1, 3, 8, 12, 64):
        partitions = list(range(count))
        for _ in range(500):
            key = f"cus_{rng.randrange(10**6):06d}/{rng.random()}".encode()
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    partitioner = KeyPartitioner()
    picked = {partitioner(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert picked == {1, 3}
    assert partitioner(None, [0, 1], []) in {0, 1}
