"""The produce request encoding and response decoding of streams.kafka.produce_encoding: byte
for byte aiokafka's own requests, field for field its own decoded responses, for every version
and every shape they can take."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from aiokafka.protocol.struct import Struct

from streams.kafka import produce_encoding

BATCH = bytes(range(256)) * 40  # a record batch as the producer builds it: opaque bytes
TOPICS: list[Any] = [
    [("hookstream.events", [(0, BATCH), (7, bytearray(b"\x00\x01\x02"))])],
    [("t1", [(3, BATCH)]), ("tópico", [(1, b""), (2, None)]), ("t3", [])],
    [("t", None)],
    [],
    None,
]


@pytest.mark.parametrize("version", produce_encoding._VERSIONS, ids=lambda v: v.__name__)
@pytest.mark.parametrize("topics", TOPICS)
@pytest.mark.parametrize("transactional_id", [None, "hookstream-batcher-x", "ü"])
def test_a_produce_request_is_encoded_as_aiokafka_encodes_it(
    version: Any, topics: Any, transactional_id: str | None
) -> None:
    produce_encoding.install()
    fields = (-1, 30_000, topics)
    request = version(transactional_id, *fields) if version.API_VERSION >= 3 else version(*fields)
    assert version.encode is produce_encoding._encode
    assert request.encode() == Struct.encode(request)


def test_install_covers_every_version_and_can_run_twice() -> None:
    produce_encoding.install()
    produce_encoding.install()
    # aiokafka 0.14 (pinned) defines v0-v8, all of one of the two schemas encoded here.
    assert sorted(v.API_VERSION for v in produce_encoding._VERSIONS) == list(range(9))
    assert all(v.encode is produce_encoding._encode for v in produce_encoding._VERSIONS)


def aiokafka_decode(version: Any, raw: bytes) -> tuple[Any, int]:
    """aiokafka's own decoding (the base class's, which install() leaves alone), and where it
    left the buffer."""
    data = BytesIO(raw)
    decoded = Struct.decode.__func__(version, data)
    return decoded, data.tell()


PARTITIONS_V5: list[Any] = [
    [(0, 0, 41, -1, 0), (7, 6, -1, 1_765_000_000_000, 12)],
    [],
    None,
]
PARTITIONS_V8: list[Any] = [
    [(0, 0, 41, -1, 0, [], None), (3, 87, -1, -1, 5, [(0, "invalid"), (2, None)], "bad ü")],
    [(1, 0, 2**62, 2**40, 0, None, "")],
    [],
    None,
]


@pytest.mark.parametrize("version", produce_encoding._RESPONSES, ids=lambda v: v.__name__)
@pytest.mark.parametrize("shape", range(4))
@pytest.mark.parametrize("trailing", [b"", b"\x00\x01"])
def test_a_produce_response_is_decoded_as_aiokafka_decodes_it(
    version: Any, shape: int, trailing: bytes
) -> None:
    produce_encoding.install()
    parts = PARTITIONS_V8 if version.API_VERSION >= 8 else PARTITIONS_V5
    topics: list[Any] | None = [
        [("hookstream.results", parts[shape % len(parts)]), ("tópico", parts[0])],
        [("t", parts[-1])],
        [],
        None,
    ][shape]
    raw = Struct.encode(version(topics, 250)) + trailing
    expected, expected_at = aiokafka_decode(version, raw)
    data = BytesIO(raw)
    decoded = version.decode(data)
    assert version.decode.__func__ is produce_encoding._decode_response
    assert decoded == expected
    assert decoded.topics == expected.topics  # lists and tuples, as aiokafka's sender reads them
    assert data.tell() == expected_at
    assert version.decode(raw) == expected  # bytes as well as a buffer


@pytest.mark.parametrize("version", produce_encoding._RESPONSES, ids=lambda v: v.__name__)
def test_a_short_response_fails_as_aiokafka_fails(version: Any) -> None:
    produce_encoding.install()
    parts = PARTITIONS_V8 if version.API_VERSION >= 8 else PARTITIONS_V5
    raw = Struct.encode(version([("t", parts[0])], 0))
    for cut in (3, 9, len(raw) - 1):
        with pytest.raises(ValueError, match=r"underrun|convert"):
            aiokafka_decode(version, raw[:cut])
        with pytest.raises(ValueError, match="underrun"):
            version.decode(BytesIO(raw[:cut]))


def test_install_covers_the_responses_of_v5_to_v8() -> None:
    produce_encoding.install()
    assert sorted(v.API_VERSION for v in produce_encoding._RESPONSES) == [5, 6, 7, 8]
