"""The AI simulator's rate limits: requests and tokens per minute, as a provider enforces them.

A sliding one-minute window: a request is admitted when the requests and the tokens admitted
in the last 60 s, plus its own, stay within the limits; otherwise it is answered 429 with the
time until enough of the window has passed. A request is counted at admission as its prompt
tokens plus its ``max_tokens`` (the completion allowance, which OpenAI reserves too), then
settled to what it really used (prompt + completion tokens; 0 for a failed call) once
answered — the accounting hookstream's budget (:mod:`agents.ai.budget`) mirrors. A sliding
window is stricter than a provider's continuously refilled bucket of the same size (which
allows a full minute's burst at once): a client that stays under it stays under both.

Headers, OpenAI's names (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as
durations like ``1.5s`` or ``1m0s``) and Anthropic's
(``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, resets as RFC 3339 times).
A reset is the time until the window has room for a request like the refused one (on a 429)
or until it is empty (on a success: "back to its initial state", as OpenAI words it).

Pure logic with an injected clock; the server is :mod:`streams.dev.ai_sim`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WINDOW_S = 60.0
Clock = Callable[[], float]


@dataclass
class Admitted:
    """One admitted request in the window: when, and the tokens it counts for now."""

    at: float
    tokens: int
    generation: int  # the window's resets before it: one from before a reset counts no more
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """Admitted (``entry`` set) or refused with ``retry_after_s``; and what the headers say."""

    entry: Admitted | None
    retry_after_s: float
    limit_requests: int | None
    limit_tokens: int | None
    remaining_requests: int | None
    remaining_tokens: int | None
    reset_requests_s: float
    reset_tokens_s: float
    limited_by: str = ""  # "requests" or "tokens" when refused


class SlidingWindow:
    """Requests and tokens admitted in the last ``WINDOW_S`` seconds, against two limits."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: deque[Admitted] = deque()
        self._tokens = 0
        self._horizon = -math.inf  # entries at or before it have left the window
        self._generation = 0
        self.tokens_counted = 0  # every admitted request's settled tokens, since the start
        self.requests_counted = 0
        self.limited = 0

    def reset(self) -> None:
        self._entries.clear()
        self._tokens = 0
        self._horizon = -math.inf
        self._generation += 1
        self.tokens_counted = self.requests_counted = self.limited = 0

    def _expire(self, now: float) -> None:
        horizon = self._horizon = now - WINDOW_S
        while self._entries and self._entries[0].at <= horizon:
            self._tokens -= self._entries.popleft().tokens

    def _until_free(self, now: float, tokens_needed: int) -> float:
        """Seconds until the window's tokens drop by at least ``tokens_needed``."""
        freed = 0
        for entry in self._entries:
            freed += entry.tokens
            if freed >= tokens_needed:
                return max(0.0, entry.at + WINDOW_S - now)
        return WINDOW_S

    def admit(self, tokens: int, rpm: int | None, tpm: int | None) -> Verdict:
        """Count a request of ``tokens`` (prompt + max_tokens) if both limits allow it."""
        now = self._clock()
        self._expire(now)
        count = len(self._entries)
        limited_by = ""
        wait_s = 0.0
        if rpm is not None and count + 1 > rpm:
            limited_by = "requests"
            wait_s = self._entries[count - rpm].at + WINDOW_S - now
        if tpm is not None and self._tokens + tokens > tpm:
            limited_by = limited_by or "tokens"
            excess = self._tokens + tokens - tpm
            # A request larger than the whole limit never fits: a minute, as for any other.
            until = WINDOW_S if tokens > tpm else self._until_free(now, excess)
            wait_s = max(wait_s, until)
        entry = None
        if limited_by:
            self.limited += 1
        else:
            entry = Admitted(now, tokens, self._generation)
            self._entries.append(entry)
            self._tokens += tokens
            self.requests_counted += 1
            count += 1
        empty_s = self._entries[-1].at + WINDOW_S - now if self._entries else 0.0
        return Verdict(
            entry=entry,
            retry_after_s=max(0.0, wait_s),
            limit_requests=rpm,
            limit_tokens=tpm,
            remaining_requests=None if rpm is None else max(0, rpm - count),
            remaining_tokens=None if tpm is None else max(0, tpm - self._tokens),
            reset_requests_s=max(0.0, wait_s) if limited_by == "requests" else empty_s,
            reset_tokens_s=max(0.0, wait_s) if limited_by == "tokens" else empty_s,
            limited_by=limited_by,
        )

    def settle(self, entry: Admitted, tokens: int) -> None:
        """The request is answered: it counts for ``tokens`` from now on (once)."""
        if entry.settled:
            return
        entry.settled = True
        if entry.generation == self._generation and entry.at > self._horizon:  # in the window
            self._tokens += tokens - entry.tokens
        entry.tokens = tokens
        self.tokens_counted += tokens


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def limit_headers(verdict: Verdict, api: str) -> dict[str, str]:
    """The rate-limit headers of an answer, in the named API's style (``openai``/``anthropic``)."""
    headers: dict[str, str] = {}
    now = datetime.now(UTC)
    limits = (
        ("requests", verdict.limit_requests, verdict.remaining_requests, verdict.reset_requests_s),
        ("tokens", verdict.limit_tokens, verdict.remaining_tokens, verdict.reset_tokens_s),
    )
    for kind, limit, remaining, reset_s in limits:
        if limit is None or remaining is None:
            continue
        if api == "anthropic":
            reset_at = (now + timedelta(seconds=reset_s)).isoformat(timespec="milliseconds")
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset_at.replace("+00:00", "Z")
        else:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = openai_duration(reset_s)
    if verdict.entry is None:
        headers["Retry-After"] = str(math.ceil(verdict.retry_after_s))
        headers["retry-after-ms"] = str(math.ceil(verdict.retry_after_s * 1000))
    return headers
