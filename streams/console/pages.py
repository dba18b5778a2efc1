"""The console's pages other than the DLQ's: flows overview, event search, live view, login."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from schemas.config import HookstreamConfig
from schemas.errors import HookstreamError, ToolError, UnknownTopic
from streams.console.activity import MAX_RECORDS_PER_TOPIC, Activity, activity
from streams.console.html import chart, csrf_input, esc, fmt, note, page, table, when
from streams.console.lag import StageLag, stage_lags
from streams.console.scrape import Scrape, scrape
from streams.console.security import AUTH_COOKIE, GUARD, csrf_for

WINDOWS_MIN = (15, 60, 360, 1440)


def _minutes(request: web.Request) -> int:
    text = request.query.get("minutes", "60")
    if not text.isdigit() or int(text) not in WINDOWS_MIN:
        raise ToolError(f"minutes={text!r}: one of {', '.join(map(str, WINDOWS_MIN))}")
    return int(text)


def _flow_section(name: str, act: Activity) -> str:
    series = act.flows[name]
    figures = [
        ("Events in", series.events, ""),
        ("Results", series.results, ""),
        ("Dead letters", series.dead_letters, ""),
        ("Cost", series.cost_usd, " USD"),
        ("Model latency, mean", series.mean_latency_ms, " ms"),
    ]
    charts = "".join(
        chart(title, values, start_ms=act.start_ms, bucket_s=act.bucket_s, unit=unit)
        for title, values, unit in figures
    )
    totals = (
        f"{fmt(sum(series.events))} events in, {fmt(sum(series.results))} results, "
        f"{fmt(sum(series.dead_letters))} dead letters, {sum(series.cost_usd):.4f} USD"
    )
    return (
        f"<section class=flow><h2>{esc(name)}</h2><p>{esc(totals)}</p>"
        f"<div class=charts>{charts}</div></section>"
    )


def _lag_table(lags: list[StageLag]) -> str:
    rows = []
    for lag in lags:
        parts = ", ".join(f"{p}: {n}" for p, n in sorted(lag.lag_by_partition.items()) if n)
        state = "" if lag.committed_any else " (the group has not committed here yet)"
        rows.append(
            [
                esc(lag.stage),
                esc(lag.group),
                esc(lag.topic),
                f"<strong>{fmt(lag.total)}</strong>",
                esc((parts or "none behind") + state),
            ]
        )
    return table(["Stage", "Consumer group", "Topic", "Lag (records)", "By partition"], rows)


def _states(found: Scrape) -> str:
    if not found.urls:
        return note(
            "No metrics URL given (--metrics-url or $HOOKSTREAM_CONSOLE_METRICS_URLS): breaker "
            "and sink-gate states are unknown.",
            kind="warn",
        )
    parts = []
    if found.answered == 0:
        parts.append(
            note(
                f"None of the {len(found.urls)} metrics URL(s) answered: breaker and sink-gate "
                "states are unknown.",
                kind="warn",
            )
        )
    if found.errors:
        parts.append(
            table(
                ["Process", "Not reachable"],
                ([esc(url), esc(error)] for url, error in sorted(found.errors.items())),
            )
        )
    if found.states:
        rows = (
            [
                esc(s.process),
                esc(s.kind),
                esc(s.name),
                f'<span class="tag {"bad" if s.bad else "ok"}">{esc(s.state)}</span>',
            ]
            for s in found.states
        )
        parts.append(table(["Process", "What", "Name", "State"], rows, css="states"))
    elif found.answered:
        parts.append(note("The processes that answered export no breaker or sink-gate state yet."))
    return "".join(parts)


async def overview(request: web.Request, config: HookstreamConfig) -> str:
    minutes = _minutes(request)
    session: aiohttp.ClientSession = request.app[SESSION]
    act, lags, found = await asyncio.gather(
        activity(config, minutes=minutes),
        stage_lags(config.kafka),
        scrape(session, request.app[METRICS_URLS]),
    )
    choices = " ".join(
        f'<a href="/?minutes={m}"{" class=active" if m == minutes else ""}>{m} min</a>'
        for m in WINDOWS_MIN
    )
    notes = "".join(
        note(
            f"{topic} holds more than {MAX_RECORDS_PER_TOPIC:,} records in this window: "
            "the charts show the newest of them.",
            kind="warn",
        )
        for topic in act.truncated
    ) + "".join(
        note(f"{topic} does not exist yet (no gateway has started).") for topic in act.missing
    )
    sections = "".join(_flow_section(name, act) for name in act.flows)
    body = (
        f"<p class=windows>Window: {choices} (read from Kafka; times UTC)</p>{notes}{sections}"
        f"<h2>Consumer lag per stage</h2>{_lag_table(lags)}"
        f"<h2>Breakers and sink gates</h2>{_states(found)}"
    )
    return page("Flows", body, active="/")


def _hop_rows(hops: list[Any]) -> list[list[str]]:
    rows = []
    for hop in hops:
        headers = "".join(
            f"<div><code>{esc(k)}</code>: <code>{esc(v)}</code></div>"
            for k, v in sorted(hop.headers.items())
        )
        value = orjson.dumps(hop.value, option=orjson.OPT_INDENT_2).decode() if hop.value else ""
        details = (
            f"<details><summary>headers and value</summary>{headers}"
            f"<pre class=value>{esc(value)}</pre></details>"
        )
        rows.append(
            [
                esc(when(hop.timestamp_ms)),
                f'<span class="tag kind">{esc(hop.kind)}</span>',
                esc(f"{hop.topic} {hop.partition}:{hop.offset}"),
                f"{esc(hop.summary)}{details}",
            ]
        )
    return rows


def _search_form(query: str, by: str, source: str) -> str:
    selected = {b: " selected" if b == by else "" for b in ("id", "key")}
    return (
        '<form method=get action="/events" class=filters><label>Find <input name=q '
        f'value="{esc(query)}" size=48 placeholder="event id, or partition key" autofocus>'
        f"</label><label>By <select name=by><option value=id{selected['id']}>event id</option>"
        f"<option value=key{selected['key']}>key</option></select></label>"
        f'<label>Source (if several use the id) <input name=source value="{esc(source)}">'
        "</label><button type=submit id=search>Search</button></form>"
    )


async def _journey(config: HookstreamConfig, event_id: str, source: str | None) -> str:
    from streams.ops.trace import duration_text, find_journey

    journey = await find_journey(config.kafka, event_id=event_id, source=source)
    if not journey.hops:
        return note(
            f"No record of event {event_id!r} on this deployment's topics "
            f"({journey.searched_text()}).",
            kind="warn",
        )
    total = journey.total_ms()
    latencies = [duration_text(ms) if ms is not None else "" for ms in journey.latencies_ms()]
    rows = [
        [*row, esc(after)] for row, after in zip(_hop_rows(journey.hops), latencies, strict=True)
    ]
    return (
        f"<p id=journey-summary>Event <code>{esc(journey.event_id)}</code>"
        + (f" from <code>{esc(journey.source)}</code>" if journey.source else "")
        + (f", key <code>{esc(journey.key)}</code>" if journey.key else "")
        + f": {len(journey.hops)} record(s)"
        + (f" over {esc(duration_text(total))}" if total is not None else "")
        + ".</p>"
        + table(["Time (UTC)", "Kind", "Where", "What", "After the previous"], rows, css="journey")
        + f"<p class=small>{esc(journey.searched_text())}</p>"
    )


async def _by_key(config: HookstreamConfig, key: str) -> str:
    from streams.console.search import events_by_key

    found = await events_by_key(config.kafka, key)
    scope = f"partition {found.partition}, {found.read:,} records read" + (
        "" if found.whole_partition else " (its newest only)"
    )
    if not found.events:
        return note(f"No event with key {key!r} ({scope}).", kind="warn")
    rows = (
        [
            esc(when(e.timestamp_ms)),
            f'<a href="/events?by=id&amp;q={quote(e.event_id)}&amp;source={quote(e.source)}">'
            f"{esc(e.event_id)}</a>",
            esc(e.source),
            esc(e.type),
            esc(f"{e.partition}:{e.offset}"),
        ]
        for e in found.events
    )
    return (
        f"<p>{len(found.events)} event(s) with key <code>{esc(key)}</code>, newest first "
        f"({esc(scope)}); open one for its journey.</p>"
        + table(["Time (UTC)", "Event id", "Source", "Type", "Where"], rows, css="keyed")
    )


async def events(request: web.Request, config: HookstreamConfig) -> str:
    query = request.query.get("q", "").strip()
    by = request.query.get("by", "id")
    source = request.query.get("source", "").strip()
    if by not in ("id", "key"):
        raise ToolError(f"by={by!r}: search by id or key")
    form = _search_form(query, by, source)
    if not query:
        return page("Event search", form, active="/events")
    found = await (
        _journey(config, query, source or None) if by == "id" else _by_key(config, query)
    )
    return page("Event search", form + found, active="/events")


async def live(request: web.Request, config: HookstreamConfig) -> str:
    body = f"<p id=live-status>Connecting to {esc(config.kafka.topic_prefix)}.results…</p>" + table(
        ["Time (UTC)", "Flow", "Event", "Key", "Model", "Latency ms", "Cost USD", "Output"],
        [],
        css="live",
    )
    return page("Live results", body, active="/live", scripts=("live.js",))


async def login_form(request: web.Request, message: str = "") -> web.Response:
    text = note(message, kind="warn") if message else ""
    body = (
        f"{text}<form method=post action=/login>{csrf_input(csrf_for(request))}"
        "<label>Token <input type=password name=token autocomplete=current-password></label> "
        "<button type=submit>Log in</button></form>"
    )
    return web.Response(text=page("Log in", body), content_type="text/html")


async def login(request: web.Request) -> web.StreamResponse:
    guard = request.app[GUARD]
    if request.method == "GET":
        return await login_form(request)
    form = await request.post()
    given = form.get("token")
    if guard.token is None or not isinstance(given, str) or not guard.token_matches(given):
        response = await login_form(request, "That token is not this console's.")
        response.set_status(401)
        return response
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(
        AUTH_COOKIE, guard.auth_cookie_value(), httponly=True, samesite="Strict", path="/"
    )
    return response


def error_page(exc: HookstreamError, config: HookstreamConfig) -> web.Response:
    """The page of an expected failure: a bad query (400), a topic that does not exist (404),
    or Kafka not answering (503, naming the brokers the config gives)."""
    status = 404 if isinstance(exc, UnknownTopic) else 400 if isinstance(exc, ToolError) else 503
    said = str(exc)
    if status == 503:
        said += f" — check that Kafka runs at {config.kafka.bootstrap_servers}"
    text = page("Cannot show this page", note(said, kind="bad"))
    return web.Response(text=text, status=status, content_type="text/html")


SESSION = web.AppKey("session", aiohttp.ClientSession)
METRICS_URLS = web.AppKey("metrics_urls", list)
