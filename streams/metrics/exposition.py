"""Prometheus exposition shared by every hookstream process.

Each component declares its own metrics next to its code (``prometheus_client`` objects on the
default registry, names prefixed ``hookstream_`` with units in the name, e.g.
``hookstream_gateway_produce_seconds``); this module only serves them. Label values never carry
secrets, payload content or unbounded ids (no event ids, no URLs with query strings).
"""

from __future__ import annotations

import logging

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


async def start_metrics_server(host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` on its own port (used by worker and sink processes)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
