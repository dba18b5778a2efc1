"""The CLI's start-up block: the garbage collector is off inside it and back as it was after;
the replay's progress bar."""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator

import pytest

from streams.cli.ops import ProgressBar, startup


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave the collector as found (on, nothing frozen) whatever a test does."""
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:  # pragma: no cover - pytest runs with the collector on
        gc.disable()


@pytest.mark.usefixtures("collector")
def test_the_collector_is_off_inside_and_on_after() -> None:
    gc.enable()
    with startup():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
def test_what_start_up_built_is_frozen_out_of_later_collections() -> None:
    gc.unfreeze()
    with startup():
        built = [[n] for n in range(1000)]  # containers the collector tracks
    assert gc.get_freeze_count() >= len(built)


@pytest.mark.usefixtures("collector")
def test_an_error_inside_turns_the_collector_back_on() -> None:
    gc.enable()
    with pytest.raises(SystemExit), startup():
        raise SystemExit(2)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
def test_nested_blocks_leave_it_off_until_the_outer_one_ends() -> None:
    gc.enable()
    with startup():
        with startup():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_line_printed_after_an_unfinished_progress_bar_starts_on_its_own() -> None:
    """replay --yes prints its cost line after the copy's read; a window's control records
    are never read, so its bar may stop short of the window and leave its line open."""
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(3, 5)
    assert not stream.getvalue().endswith("\n")
    bar.end_line()
    assert stream.getvalue().endswith("\n")
    bar.end_line()  # once
    assert stream.getvalue().count("\n") == 1

    finished = io.StringIO()
    done = ProgressBar(finished)
    done(5, 5)
    done.end_line()  # a finished bar ended its own line
    assert finished.getvalue().count("\n") == 1
