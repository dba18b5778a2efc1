"""The replay's produce request encoding (streams.kafka.produce_encoding): byte for byte
aiokafka's own, for every version and every shape a request can take."""

from __future__ import annotations

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
