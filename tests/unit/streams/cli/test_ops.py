"""The CLI's start-up block: the garbage collector is off inside it and back as it was after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.cli.ops import startup


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
