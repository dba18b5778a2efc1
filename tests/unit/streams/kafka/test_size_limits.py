"""What the batching writer learns from a refusal as too large (streams/kafka/size_limits.py);
the sizes against aiokafka's own batch builder, the bounds as pure logic. Against the broker:
tests/integration/test_batch_writer.py."""

from __future__ import annotations

import sys

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.kafka.size_limits import (
    LEARNED_FOR_S,
    TopicSizeLimits,
    lone_record_bytes,
    record_bytes_max,
)
from tests.support.clock import ManualClock

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def built_size(records: list[Record]) -> int:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=10_000_000,
    )
    for offset, (key, value, headers) in enumerate(records):
        builder.append(offset, timestamp=1_700_000_000_000, key=key, value=value, headers=headers)
    return len(builder.build())


@pytest.mark.parametrize("value_bytes", [0, 1, 60, 61, 63, 64, 100, 8_000, 8_200, 1_048_000])
@pytest.mark.parametrize("key", [None, b"cus_001"])
def test_a_lone_records_size_is_the_built_batchs(key: bytes | None, value_bytes: int) -> None:
    headers = [("ce_type", b"ticket.created"), ("hookstream-replay", b"r1")]
    value = b"x" * value_bytes
    assert lone_record_bytes(key, value, headers) == built_size([(key, value, headers)])


def test_the_most_records_add_is_never_less_than_what_they_add() -> None:
    records: list[Record] = [(b"k%d" % n, b"v" * (n * 37 % 500), []) for n in range(300)]
    bound = 61 + sum(record_bytes_max(k, v, h) for k, v, h in records)
    assert built_size(records) <= bound


def test_a_stated_limit_sets_both_bounds() -> None:
    limits = TopicSizeLimits()
    limits.learn("t", refused_bytes=9_000, records=7, stated=4_000)
    assert limits.bounds("t") == (4_000, 4_001)
    assert "max.message.bytes is 4000" in str(limits.refusal("t", 4_500))


def test_without_an_answer_the_refusals_bound_it() -> None:
    limits = TopicSizeLimits()
    # A lone record refused: it, and anything as large, is over the limit.
    limits.learn("t", refused_bytes=5_000, records=1, stated=None)
    assert limits.bounds("t") == (4_999, 5_000)
    assert "refused 5000 bytes" in str(limits.refusal("t", 6_000))
    # A batch of several refused: half of it next time, and never back up meanwhile.
    limits.learn("t", refused_bytes=4_000, records=5, stated=None)
    assert limits.bounds("t") == (2_000, 4_000)
    limits.learn("t", refused_bytes=9_000, records=1, stated=None)
    assert limits.bounds("t") == (2_000, 4_000)
    assert limits.bounds("other") is None


def test_a_stated_limit_the_refused_batch_was_under_is_not_trusted() -> None:
    # The topic's limit changed since it was read, say: the next batch must be smaller still.
    limits = TopicSizeLimits()
    limits.learn("t", refused_bytes=3_000, records=4, stated=4_000)
    assert limits.bounds("t") == (1_500, 3_000)


def test_a_lone_records_refusal_lapses_after_a_while_the_batch_size_stays() -> None:
    # An operator raises the topic's limit to redrive what was too large: the writer must
    # try the broker again rather than refuse by an old limit for as long as it runs. Its
    # batches stay small: grown again, they would be refused again every period.
    clock = ManualClock()
    limits = TopicSizeLimits(clock=clock.time)
    limits.learn("t", refused_bytes=9_000, records=1, stated=4_000)
    clock.advance(LEARNED_FOR_S - 1)
    assert limits.bounds("t") == (4_000, 4_001)
    clock.advance(1)
    assert limits.bounds("t") == (4_000, sys.maxsize)
    limits.learn("t", refused_bytes=5_000, records=1, stated=4_500)  # refused again
    assert limits.bounds("t") == (4_000, 4_501)
