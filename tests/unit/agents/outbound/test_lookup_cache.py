"""The HTTP lookups' cache: a TTL on a fake clock, the LRU bound, and what the Enricher keeps
(answers and 404s taken as null) and never keeps (errors), against a real local HTTP server."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agents.outbound.cache import TTLCache
from agents.outbound.lookups import Enricher
from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import RetriableRemoteError
from tests.unit.schemas.test_config_loader import VALID, VALID_ENV, problems_of, write


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_an_entry_is_fresh_until_its_ttl_and_reading_does_not_extend_it() -> None:
    clock = FakeClock()
    cache = TTLCache(ttl_s=60, max_entries=10, clock=clock)
    cache.put("u", {"plan": "pro"})
    clock.now_s += 59.9
    assert cache.get("u") == (True, {"plan": "pro"})
    clock.now_s += 0.1  # 60 s after it was stored, read at 59.9 s or not
    assert cache.get("u") == (False, None)
    assert len(cache) == 0  # an expired entry read is dropped


def test_a_new_put_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache = TTLCache(ttl_s=10, max_entries=10, clock=clock)
    cache.put("u", 1)
    clock.now_s += 8
    cache.put("u", 2)
    clock.now_s += 8
    assert cache.get("u") == (True, 2)


def test_past_max_entries_the_least_recently_used_goes() -> None:
    cache = TTLCache(ttl_s=60, max_entries=2, clock=FakeClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # a is now the most recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)
    assert cache.get("c") == (True, 3)


def test_a_null_answer_is_an_entry() -> None:
    cache = TTLCache(ttl_s=60, max_entries=2, clock=FakeClock())
    cache.put("gone", None)
    assert cache.get("gone") == (True, None)


# --- the Enricher with a cached lookup, against a real HTTP server ------------------------


@pytest_asyncio.fixture
async def crm() -> AsyncIterator[tuple[str, Counter[str]]]:
    """customers/<id>: 200 with the id, 404 for ``gone``, 500 for ``broken``; counts calls."""
    calls: Counter[str] = Counter()

    async def customer(request: web.Request) -> web.Response:
        name = request.match_info["id"]
        calls[name] += 1
        if name == "gone":
            return web.json_response({"error": "no such customer"}, status=404)
        if name == "broken":
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"id": name, "call": calls[name]})

    app = web.Application()
    app.router.add_get("/customers/{id}", customer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


def cached_config(tmp_path: Path, base_url: str, cache: str) -> HookstreamConfig:
    lookup = (
        "    enrich:\n      - name: customer\n"
        f"        url: {base_url}/customers/{{{{ data.id }}}}\n"
        f"        allow_private: true\n        cache: {cache}\n    ai:\n"
    )
    return load_config(write(tmp_path, VALID.replace("    ai:\n", lookup)), env=VALID_ENV)


async def test_a_cached_lookup_calls_once_per_url_within_the_ttl(
    tmp_path: Path, crm: tuple[str, Counter[str]]
) -> None:
    base_url, calls = crm
    config = cached_config(tmp_path, base_url, "{ttl_s: 60, max_entries: 100}")
    flow, clock = config.flows[0], FakeClock()
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        enricher._caches[(flow.name, "customer")]._clock = clock

        async def lookup(name: str) -> Any:
            return await enricher._lookup(flow, flow.enrich[0], {"data": {"id": name}})

        assert await lookup("c1") == {"id": "c1", "call": 1}
        assert await lookup("c1") == {"id": "c1", "call": 1}  # from the cache
        assert await lookup("c2") == {"id": "c2", "call": 1}  # another URL: called
        assert await lookup("gone") is None
        assert await lookup("gone") is None  # a 404 taken as null is an answer: cached
        assert calls == {"c1": 1, "c2": 1, "gone": 1}
        clock.now_s += 60
        assert await lookup("c1") == {"id": "c1", "call": 2}  # expired: called again
        assert calls["c1"] == 2


async def test_errors_are_never_cached(tmp_path: Path, crm: tuple[str, Counter[str]]) -> None:
    base_url, calls = crm
    config = cached_config(tmp_path, base_url, "{ttl_s: 60}")
    flow = config.flows[0]
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        for _ in range(2):
            with pytest.raises(RetriableRemoteError):
                await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "broken"}})
    assert calls["broken"] == 2  # the second event called again
    assert len(enricher._caches[(flow.name, "customer")]) == 0


async def test_without_cache_every_event_calls(
    tmp_path: Path, crm: tuple[str, Counter[str]]
) -> None:
    base_url, calls = crm
    text = VALID.replace(
        "    ai:\n",
        f"    enrich:\n      - {{name: customer, url: '{base_url}/customers/{{{{ data.id }}}}', "
        "allow_private: true}\n    ai:\n",
    )
    config = load_config(write(tmp_path, text), env=VALID_ENV)
    flow = config.flows[0]
    async with aiohttp.ClientSession() as session:
        enricher = Enricher(config, lambda guard: session)
        for _ in range(3):
            await enricher._lookup(flow, flow.enrich[0], {"data": {"id": "c1"}})
    assert calls["c1"] == 3


@pytest.mark.parametrize(
    ("cache", "expected"),
    [
        ("{ttl_s: 0}", "flows[0].enrich[0].cache.ttl_s: "),
        ("{ttl_s: 5, max_entries: 0}", "flows[0].enrich[0].cache.max_entries: "),
        ("{}", "flows[0].enrich[0].cache: missing required field 'ttl_s'"),
    ],
)
def test_a_bad_cache_names_its_field(tmp_path: Path, cache: str, expected: str) -> None:
    text = VALID.replace(
        "    ai:\n",
        f"    enrich:\n      - {{name: crm, url: 'http://crm/x', cache: {cache}}}\n    ai:\n",
    )
    [problem] = problems_of(write(tmp_path, text), VALID_ENV)
    assert expected in problem
