"""The AI simulator's sliding-minute rate limits, on a fake clock."""

from __future__ import annotations

from datetime import datetime

import pytest

from agents.outbound.http import retry_after_s
from streams.dev.ai_sim_limits import SlidingWindow, limit_headers, openai_duration
from tests.support.clock import ManualClock


def test_tokens_are_reserved_then_settled_and_leave_after_a_minute() -> None:
    clock = ManualClock()
    window = SlidingWindow(clock.time)
    first = window.admit(600, rpm=None, tpm=1000)
    assert first.entry is not None
    assert first.remaining_tokens == 400
    # A second request of 600 does not fit while the first holds its reservation ...
    refused = window.admit(600, rpm=None, tpm=1000)
    assert refused.entry is None
    assert refused.limited_by == "tokens"
    assert refused.retry_after_s == pytest.approx(60.0)
    # ... and fits once the first is settled to what it used.
    window.settle(first.entry, 100)
    clock.advance(10)
    second = window.admit(600, rpm=None, tpm=1000)
    assert second.entry is not None
    assert second.remaining_tokens == 300
    # The next refusal waits until the first request leaves the window (60 s after it), when
    # 100 tokens are back: enough for a request of 350.
    third = window.admit(350, rpm=None, tpm=1000)
    assert third.entry is None
    assert third.retry_after_s == pytest.approx(50.0)
    clock.advance(50)
    assert window.admit(350, rpm=None, tpm=1000).entry is not None
    assert (window.limited, window.requests_counted) == (2, 3)


def test_settling_after_the_request_left_the_window_changes_nothing_in_it() -> None:
    clock = ManualClock()
    window = SlidingWindow(clock.time)
    old = window.admit(500, rpm=None, tpm=1000).entry
    assert old is not None
    clock.advance(61)
    fresh = window.admit(900, rpm=None, tpm=1000)
    assert fresh.remaining_tokens == 100  # the old one is gone
    window.settle(old, 0)
    assert window.admit(100, rpm=None, tpm=1000).remaining_tokens == 0
    window.settle(old, 50)  # once only
    assert window.tokens_counted == 0


def test_requests_per_minute_and_the_request_too_large_for_the_limit() -> None:
    clock = ManualClock()
    window = SlidingWindow(clock.time)
    assert window.admit(1, rpm=2, tpm=None).entry is not None
    clock.advance(5)
    assert window.admit(1, rpm=2, tpm=None).remaining_requests == 0
    refused = window.admit(1, rpm=2, tpm=None)
    assert (refused.entry, refused.limited_by) == (None, "requests")
    assert refused.retry_after_s == pytest.approx(55.0)  # the first leaves at 60 s
    too_large = SlidingWindow(clock.time).admit(2000, rpm=None, tpm=1000)
    assert (too_large.entry, too_large.retry_after_s) == (None, 60.0)


def test_headers_in_each_apis_style_are_what_hookstream_reads() -> None:
    clock = ManualClock()
    window = SlidingWindow(clock.time)
    window.admit(900, rpm=10, tpm=1000)
    clock.advance(12.5)
    refused = window.admit(200, rpm=10, tpm=1000)
    openai = limit_headers(refused, "openai")
    assert openai["x-ratelimit-limit-tokens"] == "1000"
    assert openai["x-ratelimit-remaining-tokens"] == "100"
    assert openai["x-ratelimit-reset-tokens"] == "47.5s"
    assert openai["x-ratelimit-remaining-requests"] == "9"
    assert (openai["Retry-After"], openai["retry-after-ms"]) == ("48", "47500")
    assert retry_after_s(openai) == pytest.approx(47.5)
    anthropic = limit_headers(refused, "anthropic")
    assert anthropic["anthropic-ratelimit-tokens-remaining"] == "100"
    assert anthropic["anthropic-ratelimit-tokens-limit"] == "1000"
    reset = datetime.fromisoformat(anthropic["anthropic-ratelimit-tokens-reset"])
    assert reset.tzinfo is not None
    without_retry = {k: v for k, v in anthropic.items() if "retry-after" not in k.lower()}
    assert retry_after_s(without_retry) == pytest.approx(47.5, abs=1.0)
    admitted = limit_headers(window.admit(50, rpm=10, tpm=1000), "openai")
    assert "Retry-After" not in admitted
    assert admitted["x-ratelimit-remaining-tokens"] == "50"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (60.0, "1m0s"), (75.25, "1m15.25s")]
)
def test_reset_durations_in_openais_format(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text
