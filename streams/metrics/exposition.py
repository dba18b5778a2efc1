"""Prometheus exposition shared by every hookstream process.

Each component declares its own metrics next to its code (``prometheus_client`` objects on the
default registry, names prefixed ``hookstream_`` with units in the name, e.g.
``hookstream_gateway_produce_seconds``); this module only serves them. Label values never carry
secrets, payload content or unbounded ids (no event ids, no URLs with query strings).

Worker and sink processes have no other HTTP server, so their Kubernetes probes ask this one:
``/healthz`` (liveness) answers 200 while the process's event loop serves and its app has not
crashed; ``/readyz`` (readiness) answers 200 once the app says it is ready, 503 with the reason
in the body before that (the worker: while its agents start and its memories load).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)


def exposition() -> tuple[bytes, str]:
    """Every metric of this process in the Prometheus text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def metrics_handler(request: web.BaseRequest) -> web.Response:
    """``GET /metrics`` in the Prometheus text format."""
    body, content_type = exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# Why the process is not ready (or not alive), in words for the probe's body; None: it is.
Check = Callable[[], str | None]


def _probe(check: Check | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        reason = None if check is None else check()
        if reason is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=reason + "\n")

    return handler


async def start_metrics_server(
    host: str, port: int, *, alive: Check | None = None, ready: Check | None = None
) -> web.AppRunner:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on their own port (used by worker and
    sink processes); without ``alive``/``ready`` the probes answer 200 while the server runs."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", _probe(alive))
    app.router.add_get("/readyz", _probe(ready))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics on http://%s:%d/metrics, probes on /healthz and /readyz", host, port)
    return runner
