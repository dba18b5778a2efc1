"""DurableMap's compact forms (a mark held as its time alone, other values as the record's
bytes): what get, membership, expiry and ordering return must not change with the form."""

from __future__ import annotations

from typing import Any

import orjson

from agents.state.durable_map import DurableMap
from schemas.config import KafkaSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def new_map(clock: Clock) -> DurableMap:
    return DurableMap(KafkaSettings(), "t.map", ttl_s=100, cleanup_interval_s=60, clock=clock)


def record(written_at: float, value: Any) -> bytes:
    return orjson.dumps({"written_at": written_at, "value": value})


def test_a_mark_read_from_kafka_is_held_as_its_time_and_read_as_1() -> None:
    clock = Clock()
    durable = new_map(clock)
    durable._apply(b"seen/helpdesk/1", record(990.0, 1))
    assert durable._data["seen/helpdesk/1"] == 990.0
    assert durable.get("seen/helpdesk/1") == 1
    assert "seen/helpdesk/1" in durable


def test_true_is_not_taken_for_a_mark() -> None:
    durable = new_map(Clock())
    durable._apply(b"k", record(990.0, True))
    assert durable.get("k") is True


def test_other_values_are_held_as_bytes_and_parsed_on_each_get() -> None:
    durable = new_map(Clock())
    entry = {"provider": "sim", "output": {"sentiment": "negative"}, "usage": {"total": 3}}
    durable._apply(b"cache", record(990.0, entry))
    assert isinstance(durable._data["cache"], tuple)
    first = durable.get("cache")
    assert first == entry
    first["output"]["sentiment"] = "changed by a caller"
    assert durable.get("cache") == entry


def test_expiry_and_cleanup_see_the_time_of_both_forms() -> None:
    clock = Clock()
    durable = new_map(clock)
    durable._apply(b"old-mark", record(850.0, 1))
    durable._apply(b"old-entry", record(850.0, {"a": 1}))
    durable._apply(b"new-mark", record(990.0, 1))
    durable._apply(b"new-entry", record(990.0, {"a": 2}))
    assert durable.get("old-mark") is None
    assert durable.get("old-entry") is None
    assert durable.cleanup() == 2
    assert sorted(durable._data) == ["new-entry", "new-mark"]


def test_an_older_record_does_not_replace_a_newer_one_in_either_form() -> None:
    durable = new_map(Clock())
    durable._apply(b"k", record(995.0, {"v": "new"}))
    durable._apply(b"k", record(990.0, 1))
    assert durable.get("k") == {"v": "new"}
    durable._apply(b"m", record(995.0, 1))
    durable._apply(b"m", record(990.0, {"v": "old"}))
    assert durable.get("m") == 1


def test_a_local_write_read_back_from_the_tail_takes_the_compact_form() -> None:
    clock = Clock()
    durable = new_map(clock)
    durable.remember("done/x", 1)
    assert durable._data["done/x"] == (1_000.0, 1)
    durable._apply(b"done/x", record(1_000.0, 1))
    stored: object = durable._data["done/x"]
    assert stored == 1_000.0
    assert durable.get("done/x") == 1


def batch_record(written_at: float, marks: list[str], values: dict[str, Any]) -> bytes:
    return orjson.dumps({"written_at": written_at, "marks": marks, "values": values})


def test_a_batch_record_gives_each_mark_and_value_its_own_entry() -> None:
    """Several entries to a record (issue 16): each read back as a record of its own would be,
    in the same compact form."""
    durable = new_map(Clock())
    entry = {"provider": "sim", "output": {"label": "bug"}}
    durable._apply(b"marks/abc", batch_record(990.0, ["done/1", "done/2"], {"cache-1": entry}))
    assert durable._data["done/1"] == 990.0
    assert durable.get("done/2") == 1
    assert durable.get("cache-1") == entry
    assert "marks/abc" not in durable._data
    assert len(durable) == 3


def test_a_batch_record_does_not_replace_newer_entries() -> None:
    durable = new_map(Clock())
    durable._apply(b"cache-1", record(995.0, {"v": "new"}))
    durable._apply(b"marks/abc", batch_record(990.0, [], {"cache-1": {"v": "old"}, "cache-2": 2}))
    assert durable.get("cache-1") == {"v": "new"}
    assert durable.get("cache-2") == 2


def test_a_batch_record_of_marks_alone_is_read() -> None:
    """The shape session 11's workers write (no "values")."""
    durable = new_map(Clock())
    durable._apply(b"marks/old", orjson.dumps({"written_at": 990.0, "marks": ["done/9"]}))
    assert durable.get("done/9") == 1


def test_a_batch_records_value_is_held_as_one_bytes_with_its_time() -> None:
    """No tuple per cache entry read from a batch record (bench/memory: 56 of its ~540 bytes):
    its write time and its JSON in one bytes object, each get a fresh copy."""
    clock = Clock()
    durable = new_map(clock)
    entry = {"provider": "sim", "output": {"label": "bug"}, "usage": {"total": 7}}
    durable._apply(b"marks/abc", batch_record(990.5, [], {"cache-1": entry, "cache-2": [1, 2]}))
    assert type(durable._data["cache-1"]) is bytes
    first = durable.get("cache-1")
    assert first == entry
    first["output"]["label"] = "changed by a caller"
    assert durable.get("cache-1") == entry
    assert durable.get("cache-2") == [1, 2]
    clock.now = 990.5 + 100
    assert durable.get("cache-1") == entry
    clock.now = 990.5 + 100.5
    assert durable.get("cache-1") is None
    assert durable.cleanup() == 2
    assert len(durable) == 0


def test_entries_of_every_form_are_ordered_by_their_write_times() -> None:
    durable = new_map(Clock())
    durable._apply(b"marks/a", batch_record(992.0, [], {"k": {"v": "batch"}}))
    durable._apply(b"k", record(991.0, {"v": "older single"}))
    assert durable.get("k") == {"v": "batch"}
    durable._apply(b"k", record(993.0, {"v": "newer single"}))
    assert durable.get("k") == {"v": "newer single"}
    durable._apply(b"marks/b", batch_record(994.0, [], {"k": {"v": "newer batch"}}))
    assert durable.get("k") == {"v": "newer batch"}
    durable._apply(b"marks/c", batch_record(990.0, ["k"], {}))
    assert durable.get("k") == {"v": "newer batch"}
    durable._apply(b"marks/d", batch_record(995.0, ["k"], {}))
    assert durable.get("k") == 1
