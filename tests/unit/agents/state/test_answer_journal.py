"""The answer journal's files: what a restarted worker finds, and what it no longer needs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import orjson
import pytest

from agents.state.answers import AnswerJournal


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def result(n: int) -> bytes:
    return orjson.dumps({"flow": "triage", "event": {"id": f"ev-{n}"}, "output": {"n": n}})


def journal(directory: Path, clock: Clock | None = None, **kw: int) -> AnswerJournal:
    return AnswerJournal(directory, max_age_s=3600, clock=clock or Clock(), **kw)


def test_answers_not_done_come_back_after_a_crash(tmp_path: Path) -> None:
    first = journal(tmp_path)
    first.open()
    first.record("done/a", result(1), "cache-1")
    first.record("done/b", result(2), None)
    first.done("done/a")
    first.close()  # what a SIGKILL leaves: the file as written, nothing flushed by us

    again = journal(tmp_path)
    again.open()
    assert set(again.recovered) == {"done/b"}
    answer = again.take("done/b")
    assert answer is not None
    assert orjson.loads(answer.result) == orjson.loads(result(2))
    assert answer.cache_key is None
    again.done("done/b")
    again.close()

    third = journal(tmp_path)
    third.open()
    assert third.recovered == {}  # used and done: not offered a second time


def test_a_slot_held_by_a_living_worker_is_left_alone(tmp_path: Path) -> None:
    alive = journal(tmp_path)
    alive.open()
    alive.record("done/alive", result(1), None)

    other = journal(tmp_path)
    other.open()
    assert other.recovered == {}  # not another living process's answers
    other.record("done/other", result(2), None)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["slot-0.jsonl", "slot-1.jsonl"]
    other.close()
    alive.close()


def test_a_dead_workers_slot_is_adopted_by_the_next_one(tmp_path: Path) -> None:
    first = journal(tmp_path)
    first.open()
    second = journal(tmp_path)
    second.open()
    second.record("done/orphan", result(7), "c7")
    second.close()  # slot 1's owner dies; slot 0 lives on

    third = journal(tmp_path)  # takes slot 1 (free), adopts nothing else
    third.open()
    assert set(third.recovered) == {"done/orphan"}
    first.close()
    third.close()


def test_old_answers_and_a_torn_last_line_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    first = journal(tmp_path, clock)
    first.open()
    first.record("done/old", result(1), None)
    clock.now_s += 3601
    first.record("done/new", result(2), None)
    first.close()
    with (tmp_path / "slot-0.jsonl").open("ab") as f:
        f.write(b'{"k":"done/torn","c":null,"t":')  # killed in the middle of a write

    again = journal(tmp_path, clock)
    again.open()
    assert set(again.recovered) == {"done/new"}


def test_forget_drops_answers_whose_results_are_on_kafka(tmp_path: Path) -> None:
    first = journal(tmp_path)
    first.open()
    first.record("done/a", result(1), None)
    first.record("done/b", result(2), None)
    first.close()
    again = journal(tmp_path)
    again.open()
    assert again.forget(["done/a", "done/unknown"]) == 1
    assert set(again.recovered) == {"done/b"}
    again.close()
    third = journal(tmp_path)
    third.open()
    assert set(third.recovered) == {"done/b"}


def test_the_file_is_started_afresh_once_it_is_large(tmp_path: Path) -> None:
    j = journal(tmp_path, rotate_bytes=10_000)
    j.open()
    j.record("done/in-flight", result(0), None)  # still waiting for Kafka throughout
    for n in range(1, 200):
        j.record(f"done/{n}", result(n), None)
        j.done(f"done/{n}")
    size = (tmp_path / "slot-0.jsonl").stat().st_size
    assert size < 10_000 + 1_000  # ~60 KB written in all
    j.close()
    again = journal(tmp_path)
    again.open()
    assert set(again.recovered) == {"done/in-flight"}  # carried over by each rotation


def test_the_files_are_private(tmp_path: Path) -> None:
    j = journal(tmp_path / "answers")
    j.open()
    j.record("done/a", result(1), None)
    assert (tmp_path / "answers").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "answers" / "slot-0.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_write_that_fails_costs_the_protection_not_the_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    j.open()
    assert j._fd is not None
    os.close(j._fd)
    j._fd = os.open(os.devnull, os.O_RDONLY)  # every write now fails with EBADF
    j.record("done/a", result(1), None)  # no exception: the event goes on
    j.record("done/b", result(2), None)
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1  # once per failing streak, not per answer


def test_all_slots_taken_names_the_way_out(tmp_path: Path) -> None:
    held = []
    for slot in range(64):
        fd = os.open(tmp_path / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(fd)
    with pytest.raises(RuntimeError, match="HOOKSTREAM_STATE_DIR"):
        journal(tmp_path).open()
    for fd in held:
        os.close(fd)
