"""``hookstream trace`` without a broker: the partition a key lands on, what a record says about
its event, the one-line summaries, the journey's latencies and the printed lines, ``--since``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from schemas.errors import ToolError
from schemas.events import DeadLetter
from schemas.topics import Topics
from streams.cli.exits import EXIT_BAD_INPUT
from streams.cli.main import main
from streams.cli.trace import not_found_line, since_ms
from streams.ops.trace import (
    Hop,
    Journey,
    Searched,
    _mark_replays,
    _Search,
    duration_text,
    identity,
    iso_ms,
    journey_lines,
    partition_for,
    summarise,
)
from streams.ops.trace import (
    _hop as _hop_of,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
T0 = 1_796_000_000_000  # 2026-11-30T00:53:20Z

EVENT = {"id": "w1", "source": "helpdesk", "traceid": "4bf92f3577b34da6a3ce929d0e0e4736"}
RESULT: dict[str, Any] = {
    "flow": "triage",
    "event": {"id": "w1", "source": "helpdesk"},
    "model": "sim-1",
    "usage": {"prompt_tokens": 212, "completion_tokens": 38, "total_tokens": 250},
    "cost_usd": 0.00094,
    "latency_ms": 1234.0,
    "attempts": 1,
}


def _java_partition(murmur2_signed: int, partitions: int) -> int:
    """Java's ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    return (murmur2_signed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's own UtilsTest.testMurmur2 vectors.
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536)],
)
def test_a_key_lands_where_javas_default_partitioner_puts_it(key: bytes, java_murmur2: int) -> None:
    for partitions in (1, 3, 8, 12):
        assert partition_for(key, partitions) == _java_partition(java_murmur2, partitions)
    assert partition_for(key.decode(), 8) == partition_for(key, 8)


def test_identity_of_each_kind_of_record() -> None:
    event = {"id": "w1", "source": "helpdesk", "type": "ticket.created"}
    assert identity(event) == ("helpdesk", "w1")
    assert identity({"flow": "triage", "event": event}) == ("helpdesk", "w1")
    receipt = {"event_key": "helpdesk/w/1", "sink": "crm"}
    assert identity(receipt) == ("helpdesk", "w/1")  # an id may hold a slash; a source not
    assert identity({"flow": "triage"}) is None


def test_result_summary_has_model_tokens_cost_and_latency() -> None:
    assert summarise("results", RESULT, {}) == "triage  sim-1  212+38 tok  $0.0009  1.2 s"
    flagged = {**RESULT, "cached": True, "attempts": 2, "latency_ms": 80}
    assert summarise("results", flagged, {}) == (
        "triage  sim-1  212+38 tok  $0.0009  80 ms  cached  2 attempts"
    )


def test_result_summary_of_a_multi_step_and_a_no_ai_flow() -> None:
    steps = {**RESULT, "steps": {"classify": {}, "draft": {}}, "attempts": 2}
    assert summarise("results", steps, {}) == (
        "triage  sim-1  212+38 tok  $0.0009  1.2 s  steps classify+draft"
    )
    retried = {**steps, "attempts": 3}
    assert summarise("results", retried, {}).endswith("steps classify+draft  3 attempts")
    no_ai = {**RESULT, "provider": "", "model": "", "attempts": 0}
    assert summarise("results", no_ai, {}) == "triage  no AI step: output only, no model call"


def test_summaries_of_event_enriched_and_receipt() -> None:
    event = {"id": "w1", "source": "helpdesk", "type": "ticket.created", "partitionkey": "cus_1"}
    assert summarise("events", event, {}) == "helpdesk  ticket.created  key cus_1"
    enriched = {"flow": "triage", "enrichment": {"customer": {}, "account": {}}}
    assert summarise("enriched", enriched, {}) == "triage  lookups: account, customer"
    assert summarise("enriched", {"flow": "triage"}, {}) == "triage  lookups: none"
    receipt = {"flow": "triage", "sink": "crm", "status": 200, "attempts": 3}
    assert summarise("receipts", receipt, {}) == "triage  crm  status 200  3 attempts"
    skipped = {**receipt, "status": 0, "attempts": 0, "outcome": "skipped_when"}
    assert summarise("receipts", skipped, {}) == "triage  crm  skipped (when)"


def test_dead_letter_summary_from_its_headers() -> None:
    stamp = datetime(2026, 12, 7, tzinfo=UTC)
    letter = DeadLetter(
        stage="sink",
        error_class="TemplateError",
        error_message="data.ticket_id is undefined\n(line 1)",
        attempts=1,
        first_failure_at=stamp,
        last_failure_at=stamp,
        original_topic="p.results",
        original_partition=3,
        original_offset=7,
    )
    headers = {k: v.decode() for k, v in letter.to_headers()}
    headers |= {"hookstream-flow": "triage", "hookstream-sink": "crm"}
    assert summarise("dlq", None, headers) == (
        "sink  flow triage sink crm  TemplateError: data.ticket_id is undefined (line 1)  "
        "(1 attempt)"
    )
    assert summarise("dlq", None, {}) == "dead letter without hookstream's error headers"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (999, "999 ms"),
        (1234, "1.2 s"),
        (65_000, "1 min 05 s"),
        (7_800_000, "2 h 10 min"),
        (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"),
    ],
)
def test_durations_as_people_read_them(ms: int, text: str) -> None:
    assert duration_text(ms) == text


def _hop(
    role: str,
    kind: str,
    offset_ms: int,
    summary: str,
    replay: str | None = None,
    value: dict[str, Any] | None = None,
) -> Hop:
    return Hop(
        topic=f"p.{role}",
        partition=5,
        offset=offset_ms,
        timestamp_ms=T0 + offset_ms,
        kind=kind,
        headers={},
        value=value,
        summary=summary,
        role=role,
        replay=replay,
    )


def _journey() -> Journey:
    return Journey(
        event_id="w1",
        source="helpdesk",
        hops=[
            _hop("events", "event", 0, "helpdesk  ticket.created  key cus_1", value=EVENT),
            _hop("enriched", "enriched", 56, "triage  lookups: customer"),
            _hop("results", "result", 1340, "triage  sim-1  212+38 tok  $0.0009  1.2 s"),
        ],
        key="cus_1",
        since_ms=T0 - 3_600_000,
        searched=[Searched("p.events", [0, 1], 40), Searched("p.enriched", [5], 1)],
    )


def test_latencies_are_from_the_previous_hop() -> None:
    journey = _journey()
    assert journey.latencies_ms() == [None, 56, 1284]
    assert journey.total_ms() == 1340
    hops = journey.as_json()["hops"]
    assert [h["latency_ms"] for h in hops] == [None, 56, 1284]
    assert hops[2]["time"] == iso_ms(T0 + 1340) == "2026-11-30T00:53:21.340Z"
    assert Journey("w2", None, []).total_ms() is None
    assert journey.trace_id == EVENT["traceid"] == journey.as_json()["trace_id"]


def test_printed_lines() -> None:
    lines = journey_lines(_journey())
    assert lines == [
        "event helpdesk/w1  key cus_1  trace 4bf92f3577b34da6a3ce929d0e0e4736  3 hops in 1.3 s",
        "2026-11-30T00:53:20.000Z                p.events[5]@0      event        "
        "helpdesk  ticket.created  key cus_1",
        "2026-11-30T00:53:20.056Z        +56 ms  p.enriched[5]@56   enriched     "
        "triage  lookups: customer",
        "2026-11-30T00:53:21.340Z        +1.3 s  p.results[5]@1340  result       "
        "triage  sim-1  212+38 tok  $0.0009  1.2 s",
        "searched since 2026-11-29T23:53:20.000Z (41 records read): p.events[0,1] 40 records; "
        "p.enriched[5] 1 record",
    ]


def test_a_replays_copies_and_what_came_of_them() -> None:
    hops = [
        _hop("events", "event", 0, "live"),
        _hop("enriched", "enriched", 10, "copy", replay="r1"),
        _hop("results", "result", 20, "answer", replay="r1"),
    ]
    _mark_replays(hops)
    assert [h.kind for h in hops] == ["event", "replayed", "result"]
    assert hops[1].summary == "replay r1: copy"
    assert hops[2].summary == "answer  (replay r1)"


def test_since_takes_a_duration_or_a_time() -> None:
    now_s = T0 / 1000
    assert since_ms("7d", now_s=now_s) == T0 - 7 * 86_400_000
    assert since_ms("30m", now_s=now_s) == T0 - 1_800_000
    assert since_ms("90s", now_s=now_s) == T0 - 90_000
    assert since_ms("2026-12-01T09:30Z") == int(
        datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp() * 1000
    )
    with pytest.raises(ToolError, match=r"--since 'last week': give a duration back from now"):
        since_ms("last week")


def test_not_found_is_one_line_with_what_was_searched() -> None:
    journey = Journey("w9", "helpdesk", [], since_ms=T0, searched=[Searched("p.events", [2], 7)])
    line = not_found_line(journey)
    assert "\n" not in line
    assert line.startswith("no record of event helpdesk/w9 — searched since 2026-11-30T00:53:20")
    assert "p.events[2] 7 records" in line


def _record(topic: str, value: dict[str, Any], headers: list[tuple[str, bytes]]) -> Any:
    raw = orjson.dumps(value)
    return ConsumerRecord(topic, 2, 9, T0, 0, b"cus_1", raw, None, 5, len(raw), headers)


def test_a_record_becomes_a_hop_of_its_kind() -> None:
    result = _hop_of(_record("p.results", RESULT, []), "results", RESULT)
    assert (result.kind, result.where, result.replay) == ("result", "p.results[2]@9", None)
    redriven = _hop_of(
        _record("p.results", RESULT, [("hookstream-redriven", b"4:17")]), "results", RESULT
    )
    assert redriven.kind == "redriven"
    assert redriven.summary == "from dlq 4:17: result  " + summarise("results", RESULT, {})
    # A receipt has no headers: a replay's delivery says so in its idempotency key.
    receipt = {"flow": "t", "sink": "crm", "status": 200, "idempotency_key": "h/w1/t/crm/replay/r7"}
    assert _hop_of(_record("p.receipts", receipt, []), "receipts", receipt).replay == "r7"
    receipt["idempotency_key"] = "h/w1/t/crm"
    assert _hop_of(_record("p.receipts", receipt, []), "receipts", receipt).replay is None
    copied = _hop_of(_record("p.events", EVENT, [("hookstream-replay", b"r7")]), "events", EVENT)
    assert copied.replay == "r7"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["x", "--since", "yesterday"], "--since 'yesterday': give a duration back from now"),
        ([], "give the event's id (EVENT_ID), or --source and --webhook-id"),
        (["x", "--webhook-id", "y"], "give EVENT_ID or --webhook-id, not both"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before Kafka is asked: no broker is needed for these.
    code = main(["trace", "-c", str(REPO_ROOT / "examples" / "flows.yaml"), *argv])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"hookstream: {said}")
    assert err.count("\n") == 1


class _Raw:
    """A record as the window reader hands it out."""

    def __init__(self, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.offset, self.timestamp, self.key = 0, T0, None
        self.value, self.headers = value, headers


def _search(source: str | None = None) -> _Search:
    topics = Topics("p")
    since = datetime.fromtimestamp(T0 / 1000, UTC)
    return _Search(cast("Any", None), topics, "w1", source, since, b"w1")


def test_which_records_are_about_the_event() -> None:
    search = _search()
    assert search.matches(_Raw(orjson.dumps(EVENT), [])) == EVENT
    # The id's bytes inside another id, or in the body: parsed, and dropped.
    assert search.matches(_Raw(orjson.dumps({**EVENT, "id": "w10"}), [])) is None
    assert search.matches(_Raw(b'{"flow": "t", "note": "w1"}', [])) is None
    assert search.matches(_Raw(b"not json w1", [])) is None
    assert search.matches(_Raw(orjson.dumps({**EVENT, "id": "w2"}), [])) is None
    # A binary-mode CloudEvent: the id is a header, the value is only the data.
    binary = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"w1"),
        ("ce_source", b"shop"),
        ("ce_type", b"order.created"),
    ]
    found = search.matches(_Raw(b'{"total": 3}', binary))
    assert found is not None
    assert (found["id"], found["source"], found["data"]) == ("w1", "shop", {"total": 3})
    assert search.sources == {"helpdesk", "shop"}  # find_journey then asks for --source
    # With a source given, the other source's record is not the event.
    assert _search("helpdesk").matches(_Raw(b'{"total": 3}', binary)) is None
