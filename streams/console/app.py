"""The console's aiohttp application and :func:`serve` (``hookstream console``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from schemas.config import HookstreamConfig
from schemas.errors import HookstreamError
from streams.console import dlq_pages, live, pages
from streams.console.security import GUARD, Guard, middleware

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
Page = Callable[[web.Request, HookstreamConfig], Awaitable[str]]


def _html(
    render: Page, config: HookstreamConfig
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering ``render``'s page; an expected failure (Kafka down, a bad filter,
    no such record) becomes a page that says so, with its status."""

    async def handler(request: web.Request) -> web.Response:
        try:
            text = await render(request, config)
        except HookstreamError as exc:
            return pages.error_page(exc, config)
        return web.Response(text=text, content_type="text/html")

    return handler


def create_app(
    config: HookstreamConfig, *, token: str | None, metrics_urls: list[str]
) -> web.Application:
    guard = Guard(token)
    app = web.Application(middlewares=[middleware(guard)])
    app[GUARD] = guard
    app[pages.METRICS_URLS] = list(metrics_urls)
    dlq_pages.setup(app)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[pages.SESSION] = session
            yield

    app.cleanup_ctx.append(session_context)

    async def stream(request: web.Request) -> web.StreamResponse:
        try:
            return await live.stream(request, config.kafka)
        except HookstreamError as exc:
            return pages.error_page(exc, config)

    app.router.add_get("/", _html(pages.overview, config))
    app.router.add_get("/events", _html(pages.events, config))
    app.router.add_get("/dlq", _html(dlq_pages.dlq_list, config))
    app.router.add_get("/dlq/record/{where}", _html(dlq_pages.dlq_record, config))
    app.router.add_post("/dlq/confirm", _html(dlq_pages.dlq_confirm, config))
    app.router.add_post("/dlq/redrive", _html(dlq_pages.dlq_redrive, config))
    app.router.add_get("/live", _html(pages.live, config))
    app.router.add_get("/live/stream", stream)
    app.router.add_route("*", "/login", pages.login)
    app.router.add_static("/static/", STATIC_DIR)
    return app


async def serve(
    config: HookstreamConfig,
    *,
    host: str,
    port: int,
    token: str | None,
    metrics_urls: list[str],
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; ``started`` gets the URL once the socket listens (port 0: the
    port the system chose)."""
    app = create_app(config, token=token, metrics_urls=metrics_urls)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        log.info("hookstream console listening on %s", url)
        if started is not None:
            started(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
