"""Outbound HTTP for lookups, AI providers and sinks: one shared session, one error mapping.

Every call maps its outcome onto the exception tree, so the retry policy needs no HTTP
knowledge: 408/429/5xx, timeouts and connection errors are retriable (with the server's
Retry-After when it gives one); other 4xx are permanent.

Every request carries the current W3C trace context (:func:`schemas.tracecontext.current`:
the event's, or the innermost span's when spans are on) as ``traceparent``/``tracestate``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from agents.outbound.egress_guard import NetGuard, PublicOnlyResolver
from schemas.errors import PermanentRemoteError, RetriableRemoteError, UnsafeDestination
from schemas.tracecontext import TRACEPARENT, TRACESTATE, current
from streams.metrics import tracing

log = logging.getLogger(__name__)

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


# A connect's bound where no config gives one (worker.http_connect_timeout_s does in a worker).
DEFAULT_CONNECT_TIMEOUT_S = 5.0


def new_session(
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    limit: int = 512,
    public_only: bool = False,
) -> aiohttp.ClientSession:
    """A client session (connection pooling is what makes calls cheap). ``public_only``: for
    calls the SSRF guard covers, it connects only to public addresses
    (:class:`~agents.outbound.egress_guard.PublicOnlyResolver`)."""
    resolver = PublicOnlyResolver() if public_only else None
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, resolver=resolver),
        timeout=aiohttp.ClientTimeout(sock_connect=connect_timeout_s),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Rate-limit reset headers: OpenAI's are durations ("1s", "6m0s", "20ms"), Anthropic's are
# RFC 3339 times. When several are given, the longest wait wins: every limit must have reset.
_RESET_HEADERS = (
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
)


def _duration_s(value: str) -> float | None:
    """``1s``, ``6m0s``, ``20ms``, ``1h2m`` (OpenAI's reset format) or an RFC 3339 time."""
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from the most precise header the server sent.

    ``retry-after-ms`` (OpenAI), then ``Retry-After`` (seconds or HTTP date), then the longest
    rate-limit reset header; None when there is none or it cannot be read.
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    resets = [_duration_s(headers[name]) for name in _RESET_HEADERS if headers.get(name)]
    known = [reset for reset in resets if reset is not None]
    return max(known) if known else None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def status_error(
    what: str, status: int, raw: bytes, headers: Mapping[str, str], *, stage: str
) -> RetriableRemoteError | PermanentRemoteError:
    """The error of an answer with a status its caller does not take: retriable (with the
    server's Retry-After) for 408/425/429/5xx, permanent otherwise; its message names ``what``
    and the start of the answer's body."""
    message = f"{what}: HTTP {status}: {_short(raw.decode(errors='replace'))}"
    if status in RETRIABLE_STATUSES:
        return RetriableRemoteError(
            message, stage=stage, status=status, retry_after_s=retry_after_s(headers)
        )
    return PermanentRemoteError(message, stage=stage, status=status)


def redirect_refused(what: str, status: int, *, stage: str) -> PermanentRemoteError:
    """The error of a redirect answering a call the SSRF guard covers: its target was never
    checked (a ``Location`` with an IP literal is not even resolved), so it is not followed."""
    return PermanentRemoteError(
        f"{what}: HTTP {status}: a redirect, not followed for a URL the SSRF guard "
        "checks; point the URL at its final location",
        stage=stage,
        status=status,
    )


def json_answer(status: int, raw: bytes) -> tuple[int, object]:
    """A 2xx answer as (status, its JSON): None for an empty body or one that is not JSON,
    which the caller's own checks then refuse with its own words."""
    if not raw:
        return status, None
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, None


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
    guard: NetGuard | None = None,
) -> tuple[int, Any]:
    """Send one request; return (status, parsed JSON or None); raise RemoteError subclasses.

    ``what`` names the peer in errors ("lookup customer", "provider default") — never the
    URL's query or headers, which may hold credentials. With ``guard``, a URL that resolves to
    a private address is refused first (:mod:`agents.outbound.egress_guard`, the SSRF guard), and a
    redirect is not followed: its target was never checked (a ``Location`` with an IP literal
    is not even resolved), so it answers as a permanent error.
    """
    guarded = guard is not None and not guard.allow_private
    if guard is not None:
        await guard.check(url, what=what)
    data = None if json_body is None else orjson.dumps(json_body)
    request_headers = dict(headers or {})
    if data is not None:
        request_headers.setdefault("Content-Type", "application/json")
    trace = current()
    if trace is not None:
        request_headers[TRACEPARENT] = trace.traceparent()
        if trace.state:
            request_headers[TRACESTATE] = trace.state
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=request_headers,
            # A request's timeout replaces the session's whole, so the session's connect
            # bound (worker.http_connect_timeout_s) is carried over: without it a peer that
            # never completes the handshake held each attempt for all of ``timeout_s``.
            timeout=aiohttp.ClientTimeout(
                total=timeout_s, sock_connect=session.timeout.sock_connect
            ),
            allow_redirects=not guarded,
        ) as response:
            raw = await response.read()
            status = response.status
            if tracing.enabled():
                tracing.set_attributes({"http.response.status_code": status})
            if not_found_ok and status == 404:
                return status, None
            ok = (200 <= status < 300) if ok_statuses is None else status in ok_statuses
            if not ok and guarded and 300 <= status < 400:
                raise redirect_refused(what, status, stage=stage)
            if not ok:
                raise status_error(what, status, raw, response.headers, stage=stage)
            return json_answer(status, raw)
    except aiohttp.ConnectionTimeoutError as exc:
        raise RetriableRemoteError(
            f"{what}: could not connect within {session.timeout.sock_connect:g} s", stage=stage
        ) from exc
    except TimeoutError as exc:
        raise RetriableRemoteError(
            f"{what}: no answer within {timeout_s:g} s", stage=stage
        ) from exc
    except aiohttp.ClientError as exc:
        raise RetriableRemoteError(f"{what}: {type(exc).__name__}: {exc}", stage=stage) from exc
    except UnsafeDestination as exc:  # from the guarded session's resolver, at connect time
        raise UnsafeDestination(f"{what}: {exc}", stage=stage) from None
