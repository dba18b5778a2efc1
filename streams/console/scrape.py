"""Breaker and sink-gate states, scraped from the processes' ``/metrics`` (the overview).

These states live only in the processes (a breaker is per worker), so the console asks each
URL it was given (``--metrics-url``, repeatable, or ``$HOOKSTREAM_CONSOLE_METRICS_URLS``,
comma-separated) and shows every answer, one row per process and state. A URL that does not
answer is listed with its error; when none answers the page says the states are unknown rather
than showing an empty, healthy-looking table.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 3.0
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}


@dataclass(frozen=True, slots=True)
class State:
    process: str  # the URL, without any user:password
    kind: str  # "breaker", "flow", "sink"
    name: str
    state: str
    bad: bool


@dataclass
class Scrape:
    urls: list[str]
    states: list[State] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # shown URL -> what went wrong

    @property
    def answered(self) -> int:
        return len(self.urls) - len(self.errors)


def shown(url: str) -> str:
    """The URL without credentials: a metrics URL may carry ``user:password@``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def states_of(process: str, text: str) -> list[State]:
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "hookstream_ai_breaker_state":
                state = BREAKER_STATES.get(int(value), str(value))
                found.append(
                    State(process, "breaker", labels.get("provider", "?"), state, value > 0)
                )
            elif sample.name == "hookstream_ai_flow_paused":
                state = "paused" if value else "running"
                found.append(State(process, "flow", labels.get("flow", "?"), state, bool(value)))
            elif sample.name == "hookstream_sink_paused":
                name = f"{labels.get('flow', '?')} / {labels.get('sink', '?')}"
                state = "paused" if value else "delivering"
                found.append(State(process, "sink", name, state, bool(value)))
    return found


async def scrape(session: aiohttp.ClientSession, urls: list[str]) -> Scrape:
    result = Scrape(urls=list(urls))

    async def one(url: str) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
            async with session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    result.errors[shown(url)] = f"HTTP {response.status}"
                    return
                text = await response.text()
            result.states.extend(states_of(shown(url), text))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            said = str(exc).replace(url, shown(url))  # InvalidURL repeats the URL
            result.errors[shown(url)] = type(exc).__name__ + (f": {said}" if said else "")

    await asyncio.gather(*(one(url) for url in urls))
    return result
