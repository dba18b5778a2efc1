"""``worker.heartbeat_interval_s``: a fifth of the session unless set, and never as long as
the session (Kafka would take the worker for dead between two heartbeats)."""

from __future__ import annotations

from pathlib import Path

from schemas.config_loader import load_config
from tests.unit.schemas.test_config_loader import VALID, VALID_ENV, problems_of, write


def worker_block(tmp_path: Path, block: str) -> Path:
    return write(tmp_path, VALID.rstrip("\n") + "\nworker:\n" + block)


def test_the_heartbeat_is_a_fifth_of_the_session_unless_set(tmp_path: Path) -> None:
    loaded = load_config(worker_block(tmp_path, "  session_timeout_s: 30\n"), env=VALID_ENV)
    assert loaded.worker.heartbeat_interval_s is None
    assert loaded.worker.heartbeat_s == 6
    block = "  session_timeout_s: 60\n  heartbeat_interval_s: 1\n"
    assert load_config(worker_block(tmp_path, block), env=VALID_ENV).worker.heartbeat_s == 1


def test_a_heartbeat_as_long_as_the_session_is_refused(tmp_path: Path) -> None:
    block = "  session_timeout_s: 10\n  heartbeat_interval_s: 10\n"
    [problem] = problems_of(worker_block(tmp_path, block), VALID_ENV)
    assert "worker" in problem
    assert "heartbeat_interval_s (10) must be less than session_timeout_s (10)" in problem
