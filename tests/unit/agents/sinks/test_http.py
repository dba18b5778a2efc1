"""The HTTP sink's requests through the wire client, against a local aiohttp server: what the
target sees (method, path, Idempotency-Key, API key, body), and a redirect followed as aiohttp
followed it when the sink allows private addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from agents.outbound.egress_guard import NetGuard
from agents.sinks.base import Delivery, idempotency_key, sink_context
from agents.sinks.http import HttpSink
from schemas.config_sinks import HttpSinkConfig
from schemas.errors import RetriableRemoteError, UnsafeDestination
from schemas.events import AIResult, TokenUsage
from streams.client import make_event
from tests.support.sockets import port_that_never_accepts

Seen = list[tuple[str, str, dict[str, str], Any]]


@pytest_asyncio.fixture
async def crm() -> AsyncIterator[tuple[str, Seen]]:
    seen: Seen = []

    async def customer(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path, dict(request.headers), body))
        return web.json_response({"ok": True})

    async def moved(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.headers), None))
        raise web.HTTPTemporaryRedirect(f"/customers/{request.match_info['id']}")

    app = web.Application()
    app.router.add_route("*", "/customers/{id}", customer)
    app.router.add_route("*", "/old/{id}", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def delivery() -> Delivery:
    event = make_event(
        {"customer_id": "cus_1"}, source="helpdesk", type="t", key="cus_1", id="evt-1"
    )
    result = AIResult(
        flow="triage",
        event=event,
        enrichment={},
        provider="default",
        model="sim-1",
        output={"sentiment": "negative"},
        usage=TokenUsage(),
        latency_ms=1.0,
        attempts=1,
    )
    key = idempotency_key(result, "crm")
    return Delivery(result, key, sink_context(result))


def sink(url: str, *, allow_private: bool, session: aiohttp.ClientSession) -> HttpSink:
    config = HttpSinkConfig(
        name="crm",
        method="PATCH",
        url=url + "/{{ data.customer_id }}",
        headers={"X-Team": "a"},
        body={"sentiment": "{{ result.sentiment }}"},
        api_key=SecretStr("k1"),
        allow_private=allow_private,
    )
    return HttpSink("triage", config, session, NetGuard(allow_private=allow_private))


async def test_the_target_sees_the_method_path_keys_and_body(crm: tuple[str, Seen]) -> None:
    base, seen = crm
    async with (
        aiohttp.ClientSession() as session,
        sink(f"{base}/customers", allow_private=True, session=session) as target,
    ):
        assert await target.add(delivery()) == 200
    ((method, path, headers, body),) = seen
    assert (method, path, body) == ("PATCH", "/customers/cus_1", {"sentiment": "negative"})
    assert headers["Idempotency-Key"] == "helpdesk/evt-1/triage/crm"
    assert headers["Authorization"] == "Bearer k1"
    assert headers["X-Team"] == "a"


async def test_a_redirect_is_followed_when_private_addresses_are_allowed(
    crm: tuple[str, Seen],
) -> None:
    """The wire client follows no redirect; the sink sends that request again through
    aiohttp's session, which does (307: the same method and body)."""
    base, seen = crm
    async with (
        aiohttp.ClientSession() as session,
        sink(f"{base}/old", allow_private=True, session=session) as target,
    ):
        assert await target.add(delivery()) == 200
    assert [(m, p) for m, p, _, _ in seen] == [
        ("PATCH", "/old/cus_1"),  # the wire client's
        ("PATCH", "/old/cus_1"),  # aiohttp's, redirected to:
        ("PATCH", "/customers/cus_1"),
    ]
    assert seen[-1][2]["Idempotency-Key"] == "helpdesk/evt-1/triage/crm"
    assert seen[-1][3] == {"sentiment": "negative"}


async def test_a_guarded_sink_sends_nothing_to_a_private_address(crm: tuple[str, Seen]) -> None:
    base, seen = crm
    async with (
        aiohttp.ClientSession() as session,
        sink(f"{base}/customers", allow_private=False, session=session) as target,
    ):
        with pytest.raises(UnsafeDestination, match=r"non-public address 127\.0\.0\.1"):
            await target.add(delivery())
    assert seen == []


async def test_a_sink_connects_within_the_workers_connect_timeout() -> None:
    """The session's connect bound (worker.http_connect_timeout_s) bounds the wire client's
    connects too, not the sink's whole timeout_s."""
    with port_that_never_accepts() as port:
        timeout = aiohttp.ClientTimeout(sock_connect=0.3)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            sink(
                f"http://127.0.0.1:{port}/customers", allow_private=True, session=session
            ) as target,
        ):
            with pytest.raises(RetriableRemoteError, match=r"could not connect within 0\.3 s"):
                await target.add(delivery())
