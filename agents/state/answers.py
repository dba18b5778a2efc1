"""The answer journal: a model's answer is kept on local disk the moment it is validated.

A result reaches Kafka some milliseconds after its answer arrived, and during a broker outage
possibly minutes later. A worker killed in that window redoes the event after its restart and,
with nothing on Kafka to show for the answer, pays the provider a second time. The journal
closes that window: before the result is written, the stage appends it to a local file (one
``write(2)``, no Kafka round trip, so it works while the broker is down too); after a restart
the worker loads what it finds and an event redone here is answered from it, without a call.

What it covers and what it does not:

- it survives the process dying (``kill -9``, OOM): the kernel has the bytes once ``write``
  returned. It does not survive the machine or the disk dying (no ``fsync``: one per answer
  would cost more than the call it saves, at the rates the journal is meant for);
- it helps the worker that restarts with the same state directory (``HOOKSTREAM_STATE_DIR``;
  in Kubernetes a volume that outlives the container). An event redone by *another* worker,
  because its partition moved during the restart, is paid again;
- a call still waiting for its answer when the process died is paid again: nothing came back
  to journal.

Files: ``<dir>/slot-N.jsonl``, one line per answer (``{"k": key, "c": cache key, "r": result}``),
and a line ``{"d": key}`` once the result and its marker are on Kafka. Each process takes the
first slot whose lock (``slot-N.lock``, ``flock``) is free, so several workers may share a
state directory; a slot whose owner is gone is adopted by the next worker to start. When its
file passes ``rotate_bytes`` and every answer in it is done, it is started afresh, so the file
stays about as large as the answers written during one result write.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)
Clock = Callable[[], float]
ROTATE_BYTES = 4 * 1024 * 1024
_MAX_SLOTS = 64
# Between a done marker and a step name in a step's key: in neither (see step_key).
STEP_SEPARATOR = "#step/"


@dataclass(frozen=True, slots=True)
class Answer:
    """A journaled answer: the result as it will be written, and its answer-cache key."""

    result: bytes
    cache_key: str | None
    written_at_s: float


class AnswerJournal:
    def __init__(
        self,
        directory: Path,
        *,
        max_age_s: float,
        rotate_bytes: int = ROTATE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        """``max_age_s``: answers older than this are not reused after a restart (the
        dedupe TTL: past it, the event is no longer recognised as done either)."""
        self.directory = directory
        self.max_age_s = max_age_s
        self.rotate_bytes = rotate_bytes
        self._clock = clock
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        # Answers journaled by this process whose results are not on Kafka yet.
        self._open: dict[str, Answer] = {}
        self._failing = False
        # Answers from before the restart (this slot's and adopted ones), until used or done.
        self.recovered: dict[str, Answer] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Take a free slot, load every answer left by a dead process, start the file anew."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        own = self._take_slot()
        self._path = self.directory / f"slot-{own}.jsonl"
        for slot, lock_fd in self._orphans(own):
            self._load(self.directory / f"slot-{slot}.jsonl")
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"slot-{slot}.jsonl").unlink()
            os.close(lock_fd)
        self._load(self._path)
        self._rewrite(self.recovered)
        if self.recovered:
            log.info(
                "answer journal: %d answers from before the restart in %s",
                len(self.recovered),
                self.directory,
            )

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    # -- the stage's calls ------------------------------------------------------------------

    def record(self, key: str, result: bytes, cache_key: str | None) -> None:
        """Journal an answer before its result is written (synchronous: one ``write``)."""
        answer = Answer(result, cache_key, self._clock())
        self._open[key] = answer
        self._append(_line(key, answer))

    def done(self, key: str) -> None:
        """The result and its marker are on Kafka: the answer is no longer needed here."""
        recovered = self.recovered.pop(key, None)
        if self._open.pop(key, None) is not None or recovered is not None:
            self._append(orjson.dumps({"d": key}) + b"\n")
            if self._size >= self.rotate_bytes:
                # Only what is still needed is carried over: at most the events in flight.
                self._rewrite({**self.recovered, **self._open})

    def take(self, key: str) -> Answer | None:
        """The answer journaled for ``key`` before the restart, if any (it stays until done)."""
        return self.recovered.get(key)

    def forget(self, keys: Iterable[str]) -> int:
        """Drop recovered answers whose events are already done (their marker is on Kafka)."""
        dropped = [key for key in keys if self.recovered.pop(key, None) is not None]
        if dropped:
            self._rewrite(self.recovered)
        return len(dropped)

    # -- files --------------------------------------------------------------------------------

    def _take_slot(self) -> int:
        for slot in range(_MAX_SLOTS):
            fd = self._try_lock(slot)
            if fd is not None:
                self._lock_fd = fd
                return slot
        raise RuntimeError(
            f"answer journal: all {_MAX_SLOTS} slots in {self.directory} are held by running "
            "workers; give each worker its own HOOKSTREAM_STATE_DIR"
        )

    def _try_lock(self, slot: int) -> int | None:
        fd = os.open(self.directory / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _orphans(self, own: int) -> Iterator[tuple[int, int]]:
        """Other slots with a journal and no living owner, each locked while it is read."""
        for path in sorted(self.directory.glob("slot-*.jsonl")):
            slot = int(path.stem.removeprefix("slot-"))
            if slot == own:
                continue
            fd = self._try_lock(slot)
            if fd is not None:
                yield slot, fd

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        oldest_s = self._clock() - self.max_age_s
        for line in data.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the last line of a process killed mid-write: that answer is lost
            if "d" in entry:
                self.recovered.pop(entry["d"], None)
            elif entry.get("t", 0) >= oldest_s:
                self.recovered[entry["k"]] = Answer(
                    orjson.dumps(entry["r"]), entry.get("c"), entry["t"]
                )

    def _rewrite(self, keep: dict[str, Answer]) -> None:
        """Start the slot's file again with only ``keep`` in it (written aside, then renamed)."""
        if self._path is None:
            raise RuntimeError("answer journal used before open()")
        if self._fd is not None:
            os.close(self._fd)
        fresh = self._path.with_suffix(".tmp")
        lines = b"".join(_line(key, answer) for key, answer in keep.items())
        fresh.write_bytes(lines)
        os.chmod(fresh, 0o600)
        os.replace(fresh, self._path)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._size = len(lines)

    def _append(self, data: bytes) -> None:
        """Append, or warn once and go on: a full disk costs the protection, not the event."""
        if self._fd is None:
            raise RuntimeError("answer journal used before open()")
        try:
            os.write(self._fd, data)
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "answer journal: cannot write to %s (%s); answers are not protected "
                    "against a crash until it works again",
                    self._path,
                    exc.strerror,
                )
            self._failing = True
            return
        if self._failing:
            log.warning("answer journal: writing to %s again", self._path)
            self._failing = False
        self._size += len(data)


def step_key(marker: str, step: str) -> str:
    """The journal key of one step's answer in a multi-step flow: its event's done marker
    and the step's name (a worker killed between two steps pays neither again)."""
    return f"{marker}{STEP_SEPARATOR}{step}"


def marker_of(key: str) -> str:
    """The done marker a journal key belongs to (itself, or a step key's event's)."""
    return key.split(STEP_SEPARATOR, 1)[0]


def _line(key: str, answer: Answer) -> bytes:
    entry = {
        "k": key,
        "c": answer.cache_key,
        "t": answer.written_at_s,
        "r": orjson.Fragment(answer.result),
    }
    return orjson.dumps(entry) + b"\n"
