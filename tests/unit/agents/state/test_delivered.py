"""The delivered-memory's reading of its topic's records (agents.state.delivered._apply):
single entries of any version, batch records, dead letters, and a delivery being final."""

from __future__ import annotations

import orjson

from agents.state.delivered import DEAD_LETTERED, DELIVERED, DeliveredMemory
from schemas.config import KafkaSettings


def memory() -> DeliveredMemory:
    return DeliveredMemory(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "t.delivered")


def test_batch_records_and_single_entries_are_both_read() -> None:
    seen = memory()
    seen._apply(b"src/a/f/crm", b'{"flow":"f","status":200}')  # an older version's entry
    seen._apply(b"deliveries/1", orjson.dumps({"delivered": ["src/b/f/crm", "src/c/f/crm"]}))
    seen._apply(b"src/d/f/crm", orjson.dumps({"dead_lettered": True, "error": "X"}))
    assert seen._outcomes == {
        b"src/a/f/crm": DELIVERED,
        b"src/b/f/crm": DELIVERED,
        b"src/c/f/crm": DELIVERED,
        b"src/d/f/crm": DEAD_LETTERED,
    }


def test_a_dead_letter_read_after_a_delivery_does_not_undo_it() -> None:
    """A redriven result's delivery (in a batch record on one partition) and its earlier dead
    letter (a record of its own on another) are read in either order: the delivery wins."""
    seen = memory()
    seen._apply(b"src/d/f/crm", orjson.dumps({"dead_lettered": True, "error": "X"}))
    seen._apply(b"deliveries/1", orjson.dumps({"delivered": ["src/d/f/crm"]}))
    seen._apply(b"src/d/f/crm", orjson.dumps({"dead_lettered": True, "error": "X"}))
    assert seen._outcomes[b"src/d/f/crm"] == DELIVERED


def test_a_malformed_batch_record_is_ignored() -> None:
    seen = memory()
    seen._apply(b"deliveries/2", b'{"delivered": 3}')
    seen._apply(b"deliveries/3", b'{"delivered": [')
    assert seen._outcomes == {}
