"""Outbound HTTP for lookups, AI providers and sinks: one shared session, one error mapping.

Every call maps its outcome onto the exception tree, so the retry policy needs no HTTP
knowledge: 408/429/5xx, timeouts and connection errors are retriable (with the server's
Retry-After when it gives one); other 4xx are permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from streams.errors import PermanentRemoteError, RetriableRemoteError

log = logging.getLogger(__name__)

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def new_session(*, connect_timeout_s: float = 5.0, limit: int = 512) -> aiohttp.ClientSession:
    """The process's one client session (connection pooling is what makes calls cheap)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(sock_connect=connect_timeout_s),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), if present and sane."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    stage: str,
    what: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    ok_statuses: frozenset[int] | None = None,
    not_found_ok: bool = False,
) -> tuple[int, Any]:
    """Send one request; return (status, parsed JSON or None); raise RemoteError subclasses.

    ``what`` names the peer in errors ("lookup customer", "provider default") — never the
    URL's query or headers, which may hold credentials.
    """
    data = None if json_body is None else orjson.dumps(json_body)
    request_headers = dict(headers or {})
    if data is not None:
        request_headers.setdefault("Content-Type", "application/json")
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            raw = await response.read()
            status = response.status
            if not_found_ok and status == 404:
                return status, None
            ok = (200 <= status < 300) if ok_statuses is None else status in ok_statuses
            if not ok:
                message = f"{what}: HTTP {status}: {_short(raw.decode(errors='replace'))}"
                if status in RETRIABLE_STATUSES:
                    raise RetriableRemoteError(
                        message,
                        stage=stage,
                        status=status,
                        retry_after_s=retry_after_s(response.headers),
                    )
                raise PermanentRemoteError(message, stage=stage, status=status)
            if not raw:
                return status, None
            try:
                return status, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return status, None
    except TimeoutError as exc:
        raise RetriableRemoteError(
            f"{what}: no answer within {timeout_s:g} s", stage=stage
        ) from exc
    except aiohttp.ClientError as exc:
        raise RetriableRemoteError(f"{what}: {type(exc).__name__}: {exc}", stage=stage) from exc
