"""``hookstream replay``'s bounds: what is accepted, what is refused and what the refusal says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.errors import ToolError
from streams.cli.ops import replay_bound, replay_window


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1200", 1200),
        ("2026-12-01T09:30Z", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-12-01T00:00", datetime(2026, 12, 1, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ],
)
def test_offsets_and_times_with_a_time_of_day_are_accepted(
    text: str, expected: int | datetime
) -> None:
    assert replay_bound(text, option="--from") == expected


@pytest.mark.parametrize("text", ["2026-12-01", " 2026-12-01 "])
def test_a_bare_date_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ToolError) as refused:
        replay_bound(text, option="--from")
    message = str(refused.value)
    assert "is a date without a time" in message
    assert "2026-12-01T09:30Z" in message
    assert "--from 2026-12-01T00:00Z" in message


@pytest.mark.parametrize(
    ("start", "end", "what"),
    [
        ("9", "3", "later than"),
        ("3", "3", "the same as"),
        ("2026-12-01T10:00Z", "2026-12-01T09:00Z", "later than"),
        ("2026-12-01T10:00Z", "2026-12-01T11:00+01:00", "the same as"),
    ],
)
def test_an_empty_window_is_refused(start: str, end: str, what: str) -> None:
    with pytest.raises(ToolError, match=f"is {what} --to"):
        replay_window(start, end)


def test_a_window_that_is_not_empty_or_cannot_be_compared_is_kept() -> None:
    assert replay_window("3", "9") == (3, 9)
    assert replay_window("3", None) == (3, None)
    # An offset and a time: only the topic knows which comes first.
    start, end = replay_window("3", "2026-12-01T09:00Z")
    assert (start, end) == (3, datetime(2026, 12, 1, 9, tzinfo=UTC))
