"""The SSRF guard: which addresses are refused, what the config allows, what errors say."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import agents.outbound.lookups
from agents.outbound import egress_guard
from agents.outbound.egress_guard import NetGuard, PublicOnlyResolver, is_public
from agents.outbound.http import new_session, request_json
from agents.outbound.lookups import Enricher
from agents.resources import Resources
from agents.sinks.stage import SinkStage
from agents.stages.enrich import EnrichStage
from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import PermanentRemoteError, UnsafeDestination
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV

REFUSED = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "10.1.2.3",  # RFC 1918
    "172.16.0.1",
    "192.168.1.10",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # noqa: S104 - unspecified, refused
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "::1",
    "::",
    "fe80::1",  # IPv6 link-local
    "fc00::1",  # unique local
    "fd12:3456::1",
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped: judged as the IPv4 address
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254: reaches it on a network with NAT64
    "64:ff9b::7f00:1",
    "::a9fe:a9fe",  # IPv4-compatible (deprecated)
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
]
ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", REFUSED)
async def test_a_url_with_a_private_literal_is_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeDestination) as caught:
        await NetGuard(stage="sink").check(f"http://{host}:8080/x?token=secret", what="sink crm")
    message = str(caught.value)
    assert message.startswith("sink crm: host ")
    assert "allow_private" in message
    assert "secret" not in message  # the URL's query is never echoed
    assert caught.value.stage == "sink"
    assert not caught.value.retriable


@pytest.mark.parametrize("address", ALLOWED)
async def test_a_url_with_a_public_literal_passes(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    await NetGuard().check(f"https://{host}/hook", what="sink crm")


async def test_allow_private_turns_the_check_off() -> None:
    guard = NetGuard(allow_private=True)
    await guard.check("http://127.0.0.1:8092/customers/1", what="sink crm")
    await guard.check("http://[::1]/", what="sink crm")


async def test_localhost_by_name_is_refused() -> None:
    with pytest.raises(UnsafeDestination, match="'localhost'"):
        await NetGuard().check("http://localhost:5432/", what="lookup customer")


async def test_every_address_of_a_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def two_records(host: str, port: int) -> list[egress_guard.IPAddress]:
        assert (host, port) == ("mixed.example", 443)
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")]

    monkeypatch.setattr(egress_guard, "resolve", two_records)
    with pytest.raises(UnsafeDestination, match=r"10\.0\.0\.7"):
        await NetGuard().check("https://mixed.example/", what="sink crm")


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/", "file:///etc/passwd", "http:///path"])
async def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(UnsafeDestination, match="only http"):
        await NetGuard().check(url, what="sink crm")


async def test_resolve_keeps_literals_and_drops_scope_ids() -> None:
    assert await egress_guard.resolve("[fe80::1]", 80) == [ipaddress.ip_address("fe80::1")]
    assert await egress_guard.resolve("no-such-host.invalid", 80) == []


async def test_enrichment_lookups_pass_the_guard() -> None:
    """An enrichment lookup to a private address is refused before any request is sent."""
    env = {**EXAMPLE_ENV, "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS": "false"}
    config = load_config(EXAMPLE, env=env)
    flow = config.flows[0]
    assert not config.worker.allow_private_networks
    assert not flow.enrich[0].allow_private
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        with pytest.raises(UnsafeDestination) as caught:
            await enricher._lookup(flow, flow.enrich[0], {"data": {"customer_id": "cus_1"}})
    assert caught.value.stage == "enrich"
    assert "lookup customer" in str(caught.value)


class FixedAnswers(AbstractResolver):
    """A DNS that answers what the test says, and counts the questions."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_refuses_an_answer_with_a_private_address() -> None:
    resolver = PublicOnlyResolver(FixedAnswers("93.184.216.34", "10.0.0.7"), stage="sink")
    with pytest.raises(UnsafeDestination, match=r"10\.0\.0\.7") as caught:
        await resolver.resolve("rebinding.example", 443)
    assert caught.value.stage == "sink"


async def test_the_resolver_passes_public_answers_through() -> None:
    inner = FixedAnswers("93.184.216.34", "2606:4700:4700::1111")
    answers = await PublicOnlyResolver(inner).resolve("public.example", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34", "2606:4700:4700::1111"]


@pytest_asyncio.fixture
async def local_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A real HTTP server on 127.0.0.1, and the paths of the requests it got."""
    hits: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    async def moved(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/x")

    app = web.Application()
    app.router.add_get("/x", hello)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


@pytest.fixture
def public_pre_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before the request sees a public address for every name."""

    async def public(host: str, port: int) -> list[egress_guard.IPAddress]:
        return [ipaddress.ip_address("93.184.216.34")]

    monkeypatch.setattr(egress_guard, "resolve", public)


def session_on(resolver: AbstractResolver) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    )


@pytest.mark.usefixtures("public_pre_check")
async def test_a_rebound_name_gets_no_connection(local_server: tuple[int, list[str]]) -> None:
    """The check before the request sees a public address; the connection's own lookup gets
    127.0.0.1 (a rebinding DNS): the guarded session refuses to connect, the plain one would."""

    port, hits = local_server
    url = f"http://rebinding.example:{port}/x"
    guarded = session_on(PublicOnlyResolver(FixedAnswers("127.0.0.1")))
    plain = session_on(FixedAnswers("127.0.0.1"))
    async with guarded, plain:
        with pytest.raises(UnsafeDestination) as caught:
            await request_json(
                guarded,
                "GET",
                url,
                stage="sink",
                what="sink crm",
                timeout_s=5,
                guard=NetGuard(stage="sink"),
            )
        assert hits == []  # refused before a connection: the server saw nothing
        status, body = await request_json(
            plain, "GET", url, stage="sink", what="sink crm", timeout_s=5
        )
    assert str(caught.value).startswith("sink crm: host 'rebinding.example' resolved to ")
    assert caught.value.stage == "sink"
    assert not caught.value.retriable
    assert (status, body) == (200, {"ok": True})  # the server is there: only the guard refused
    assert hits == ["/x"]


async def test_resources_route_guarded_calls_through_the_public_only_session() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    resources = Resources(config, client_id="t")
    resources._session = plain = aiohttp.ClientSession()
    resources._guarded_session = guarded = new_session(public_only=True)
    async with plain, guarded:
        assert resources.session_for(NetGuard()) is guarded
        assert resources.session_for(NetGuard(allow_private=True)) is plain
        connector = guarded.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert isinstance(connector._resolver, PublicOnlyResolver)


@pytest.mark.usefixtures("public_pre_check")
async def test_a_redirect_of_a_guarded_call_is_not_followed(
    local_server: tuple[int, list[str]],
) -> None:
    """The first URL passes the guard; its answer redirects to an address the guard would
    refuse (an IP literal, which no resolver sees): not followed, a permanent error."""

    port, hits = local_server
    url = f"http://redirecting.example:{port}/moved"
    session = session_on(FixedAnswers("127.0.0.1"))

    async def lookup(guard: NetGuard) -> tuple[int, Any]:
        return await request_json(
            session, "GET", url, stage="enrich", what="lookup customer", timeout_s=5, guard=guard
        )

    async with session:
        with pytest.raises(PermanentRemoteError) as caught:
            await lookup(NetGuard(stage="enrich"))
        # Unguarded (allow_private), the same redirect is followed as before.
        status, body = await lookup(NetGuard(allow_private=True, stage="enrich"))
    assert caught.value.status == 302
    assert "redirect, not followed" in str(caught.value)
    assert (status, body) == (200, {"ok": True})
    assert hits == ["/moved", "/moved", "/x"]  # the guarded call never reached /x


async def test_guarded_lookups_go_through_the_public_only_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**EXAMPLE_ENV, "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS": "false"}
    config = load_config(EXAMPLE, env=env)
    flow = config.flows[0]
    sessions: list[tuple[bool, object]] = []

    async def fake_send(client: Any, session: object, *args: Any, **kwargs: Any) -> Any:
        sessions.append((client.public_only, session))  # connects to public addresses only?
        return 200, {"ok": True}

    monkeypatch.setattr(agents.outbound.lookups, "send_checked", fake_send)
    plain, guarded = object(), object()

    def stage_of(config: HookstreamConfig) -> EnrichStage:
        resources = Resources(config, client_id="t")
        resources._session, resources._guarded_session = plain, guarded  # type: ignore[assignment]
        return EnrichStage(config, resources)

    await stage_of(config).enricher._lookup(
        flow, flow.enrich[0], {"data": {"customer_id": "cus_1"}}
    )
    allowed = load_config(EXAMPLE, env={**EXAMPLE_ENV, "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS": "true"})
    await stage_of(allowed).enricher._lookup(
        allowed.flows[0], allowed.flows[0].enrich[0], {"data": {"customer_id": "c"}}
    )
    assert sessions == [(True, guarded), (False, plain)]


def test_guarded_sinks_are_built_on_the_public_only_session() -> None:
    env = {**EXAMPLE_ENV, "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS": "false"}
    config = load_config(EXAMPLE, env=env)
    resources = Resources(config, client_id="t")
    # Stand-ins: a sink reads only a session's connect timeout before its first request.
    plain = SimpleNamespace(timeout=aiohttp.ClientTimeout(sock_connect=5))
    guarded = SimpleNamespace(timeout=aiohttp.ClientTimeout(sock_connect=5))
    resources._session, resources._guarded_session = plain, guarded  # type: ignore[assignment]
    flow = config.flows[0]
    http_sinks = [s for s in flow.sinks if s.kind in ("http", "slack")]
    assert http_sinks
    for sink_config in http_sinks:
        stage = SinkStage(config, resources, None, flow.name, sink_config.name)  # type: ignore[arg-type]
        built = stage.build_sink()
        assert built.session is guarded  # type: ignore[attr-defined]
        # The requests' own client connects only to public addresses (PublicOnlyResolver's).
        assert built.client.public_only  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("worker_allows", "target_allows", "allowed"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_a_targets_guard_allows_private_addresses_when_the_worker_or_the_target_says_so(
    worker_allows: bool, target_allows: bool, allowed: bool
) -> None:
    env = {**EXAMPLE_ENV, "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS": str(worker_allows).lower()}
    worker = load_config(EXAMPLE, env=env).worker
    assert worker.allow_private_networks is worker_allows
    guard = NetGuard.for_target(worker, target_allows, stage="sink")
    assert (guard.allow_private, guard.stage) == (allowed, "sink")
