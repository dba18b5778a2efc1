"""An HTTP lookup through the wire client (agents.outbound.wire, issue 16), against a real local
HTTP server: what the GET carries, which connection it uses, how 404s, redirects and errors
end, what its span records, and that a guarded connect tries every checked address."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agents.outbound.wire
from agents.outbound import egress_guard
from agents.outbound.lookups import Enricher
from schemas import tracecontext
from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import PermanentRemoteError, RetriableRemoteError
from streams.client import make_event
from tests.support.dumps import count_event_dumps
from tests.support.spans import exporting
from tests.unit.schemas.test_config_loader import VALID, VALID_ENV, write


@dataclass
class Crm:
    """The server's address, and what it saw of each request."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest_asyncio.fixture
async def crm() -> AsyncIterator[Crm]:
    """customers/<id>: 200 with the id, 404 for ``gone``, 500 for ``broken``, a 302 to
    customers/c1 for ``moved``; each request's method, path, headers and client port noted."""
    seen = Crm("")

    async def customer(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.requests.append(
            {
                "method": request.method,
                "path_qs": request.path_qs,
                "headers": dict(request.headers),
                "port": peer[1] if peer else None,
            }
        )
        name = request.match_info["id"]
        if name == "gone":
            return web.json_response({"error": "no such customer"}, status=404)
        if name == "broken":
            return web.json_response({"error": "down"}, status=500, headers={"Retry-After": "7"})
        if name == "moved":
            raise web.HTTPFound("/customers/c1")
        return web.json_response({"id": name})

    app = web.Application()
    app.router.add_get("/customers/{id}", customer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield seen
    finally:
        await runner.cleanup()


def lookup_config(tmp_path: Path, url: str, extra: str = "allow_private: true") -> HookstreamConfig:
    lookup = (
        f"    enrich:\n      - {{name: customer, url: '{url}/customers/{{{{ data.id }}}}', "
        f"{extra}}}\n    ai:\n"
    )
    return load_config(write(tmp_path, VALID.replace("    ai:\n", lookup)), env=VALID_ENV)


async def looked_up(config: HookstreamConfig, *ids: str) -> list[Any]:
    """Each id's lookup by one Enricher (its connections closed after)."""
    flow = config.flows[0]
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        try:
            return [await enricher._lookup(flow, flow.enrich[0], {"data": {"id": i}}) for i in ids]
        finally:
            enricher.close()


async def test_a_lookup_is_one_get_with_its_headers_on_a_kept_alive_connection(
    tmp_path: Path, crm: Crm
) -> None:
    extra = "allow_private: true, headers: {X-Api-Key: k-123, Accept: application/vnd.crm+json}"
    config = lookup_config(tmp_path, crm.base_url, extra)
    context = tracecontext.new_trace()
    token = tracecontext.activate(context)
    try:
        answers = await looked_up(config, "c1", "a b")
    finally:
        tracecontext.restore(token)
    assert answers == [{"id": "c1"}, {"id": "a b"}]
    first, second = crm.requests
    assert (first["method"], first["path_qs"]) == ("GET", "/customers/c1")
    assert second["path_qs"] == "/customers/a%20b"  # the template percent-encodes values
    headers = first["headers"]
    assert headers["X-Api-Key"] == "k-123"
    assert headers["Accept"] == "application/vnd.crm+json"  # the lookup's own, not the default
    assert headers["User-Agent"] == "hookstream"  # the wire client's, not aiohttp's
    assert headers["traceparent"] == context.traceparent()
    # A GET without a body says nothing of one, as aiohttp's did not.
    assert "Content-Length" not in headers
    assert "Content-Type" not in headers
    assert first["port"] == second["port"]  # one connection, kept alive


async def test_a_404_is_null_or_with_on_not_found_fail_a_permanent_error(
    tmp_path: Path, crm: Crm
) -> None:
    assert await looked_up(lookup_config(tmp_path, crm.base_url), "gone") == [None]
    failing = lookup_config(tmp_path, crm.base_url, "allow_private: true, on_not_found: fail")
    with pytest.raises(PermanentRemoteError) as caught:
        await looked_up(failing, "gone")
    assert caught.value.status == 404
    assert caught.value.stage == "enrich"
    assert str(caught.value).startswith("lookup customer: HTTP 404: ")


async def test_a_5xx_is_retriable_with_the_servers_retry_after(tmp_path: Path, crm: Crm) -> None:
    with pytest.raises(RetriableRemoteError) as caught:
        await looked_up(lookup_config(tmp_path, crm.base_url), "broken")
    assert caught.value.status == 500
    assert caught.value.retry_after_s == 7.0
    assert str(caught.value).startswith("lookup customer: HTTP 500: ")


async def test_a_redirect_is_followed_with_allow_private_and_refused_when_guarded(
    tmp_path: Path, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never silently null: with allow_private the 302 is followed (through aiohttp, as
    before); a guarded lookup's redirect, whose target was never checked, is an error."""
    assert await looked_up(lookup_config(tmp_path, crm.base_url), "moved") == [{"id": "c1"}]
    # The wire client's GET got the 302; aiohttp's sent it again and followed it.
    paths = ["/customers/moved", "/customers/moved", "/customers/c1"]
    assert [r["path_qs"] for r in crm.requests] == paths
    assert crm.requests[0]["headers"]["User-Agent"] == "hookstream"
    # The local server taken for a public one, by the check and by the connect.
    monkeypatch.setattr(egress_guard, "is_public", lambda address: True)
    monkeypatch.setattr(agents.outbound.wire, "is_public", lambda address: True)
    guarded = lookup_config(tmp_path, crm.base_url, "allow_private: false")
    assert not guarded.worker.allow_private_networks
    with pytest.raises(PermanentRemoteError, match="redirect, not followed") as caught:
        await looked_up(guarded, "moved")
    assert caught.value.status == 302
    assert [r["path_qs"] for r in crm.requests][3:] == ["/customers/moved"]


async def test_a_guarded_lookup_connects_to_the_next_checked_address_when_one_refuses(
    tmp_path: Path, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As aiohttp's connector did: a name whose first address refuses the connection is
    reached at its next one (127.0.0.2 refuses: the server listens on 127.0.0.1 only)."""

    async def two_addresses(host: str, port: int) -> list[egress_guard.IPAddress]:
        assert host == "crm.example"
        return [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]

    for module in (egress_guard, agents.outbound.wire):
        monkeypatch.setattr(module, "resolve", two_addresses)
        monkeypatch.setattr(module, "is_public", lambda address: True)
    url = crm.base_url.replace("127.0.0.1", "crm.example")
    config = lookup_config(tmp_path, url, "allow_private: false")
    assert await looked_up(config, "c1") == [{"id": "c1"}]
    assert crm.requests[0]["headers"]["Host"] == f"crm.example:{url.rsplit(':', 1)[1]}"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    with exporting("worker") as exporter:
        yield exporter


async def test_a_lookup_reading_the_events_attributes_gets_them_one_reading_data_only_not(
    tmp_path: Path, crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = make_event({"id": "c1"}, source="helpdesk", type="ticket.created", key="c1", id="ev-1")
    dumped = count_event_dumps(monkeypatch)
    by_data = lookup_config(tmp_path, crm.base_url)
    by_event = load_config(
        write(
            tmp_path,
            VALID.replace(
                "    ai:\n",
                f"    enrich:\n      - {{name: customer, url: '{crm.base_url}/customers/"
                "{{ event.id }}?type={{ event.type }}', allow_private: true}\n    ai:\n",
            ),
        ),
        env=VALID_ENV,
    )
    enrichments = []
    async with aiohttp.ClientSession() as session:
        for config in (by_data, by_event):
            enricher = Enricher(config, lambda guard: session)
            try:
                enrichments.append((await enricher.enrich_for(config.flows[0], event)).enrichment)
            finally:
                enricher.close()
    assert enrichments == [{"customer": {"id": "c1"}}, {"customer": {"id": "ev-1"}}]
    assert [r["path_qs"] for r in crm.requests] == [
        "/customers/c1",
        "/customers/ev-1?type=ticket.created",
    ]
    assert dumped == ["ev-1"]  # only for the lookup that reads event.*


async def test_the_lookup_span_records_the_answers_status_an_errors_too(
    tmp_path: Path, crm: Crm, exported: InMemorySpanExporter
) -> None:
    config = lookup_config(tmp_path, crm.base_url)
    flow = config.flows[0]
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        try:
            await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "c1"}})
            with pytest.raises(RetriableRemoteError):
                await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "broken"}})
        finally:
            enricher.close()
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["lookup customer", "lookup customer"]
    assert [(s.attributes or {}).get("http.response.status_code") for s in spans] == [200, 500]
    assert spans[0].kind.name == "CLIENT"
    # The request carried the span's own context.
    sent = crm.requests[0]["headers"]["traceparent"]
    assert sent.split("-")[2] == format(spans[0].context.span_id, "016x")


async def test_a_new_session_gets_a_new_client_and_the_old_ones_connections_close(
    tmp_path: Path, crm: Crm
) -> None:
    """The shared connections started again (an agent restarted) open new connections."""
    config = lookup_config(tmp_path, crm.base_url)
    flow = config.flows[0]
    sessions = [aiohttp.ClientSession(), aiohttp.ClientSession()]
    current = sessions[0]
    enricher = Enricher(config, lambda guard: current)
    try:
        await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "c1"}})
        first = enricher._clients[(flow.name, "customer")][1]
        (poster,) = first._origins.values()
        (connection,) = poster._idle
        current = sessions[1]
        await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "c2"}})
        second = enricher._clients[(flow.name, "customer")][1]
    finally:
        enricher.close()
        for session in sessions:
            await session.close()
    assert second is not first
    assert connection.closed  # the old client's idle connection
    assert crm.requests[0]["port"] != crm.requests[1]["port"]
