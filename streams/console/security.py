"""Who may use the console, and how a state-changing request proves it came from its own page.

- **Bind.** Loopback by default. Any other address is refused unless a token is set
  (``$HOOKSTREAM_CONSOLE_TOKEN``, at least :data:`MIN_TOKEN_CHARS` characters): the console can
  redrive dead letters and shows payloads, so it is never open to a network without one.
- **Token.** When set (on loopback too), every request except the login form and the static
  files carries it: ``Authorization: Bearer <token>``, or the session cookie the login form sets.
  The cookie holds an HMAC of the token, not the token, and is ``HttpOnly; SameSite=Strict``.
  Comparisons are constant-time (:func:`hmac.compare_digest`).
- **CSRF.** Every POST carries a hidden ``csrf`` field: an HMAC, under a key made when the
  process starts, of the browser's session id (a random ``SameSite=Strict`` cookie). A POST
  without it, with another session's, or with an ``Origin`` that is not this console's is
  answered 403 before its handler runs.
- **Headers.** A Content-Security-Policy that allows scripts and styles from the console only (no
  inline script: a payload that slipped through escaping still could not run), no framing, no
  referrer, no sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from schemas.errors import ToolError

TOKEN_ENV = "HOOKSTREAM_CONSOLE_TOKEN"  # noqa: S105 - the variable's name, not a token
MIN_TOKEN_CHARS = 16
AUTH_COOKIE = "hookstream_console_auth"
SESSION_COOKIE = "hookstream_console_session"
CSRF_FIELD = "csrf"
PUBLIC_PREFIXES = ("/login", "/static/")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make POSTs send "Origin: null"
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def bind_token(host: str, token: str | None) -> str | None:
    """The token the console will require, or ToolError when ``host`` may not be bound.

    A non-loopback ``host`` needs a token; a token, when given, must be long enough to resist
    guessing over the network."""
    token = token or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ToolError(
            f"${TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if token is None and not is_loopback(host):
        raise ToolError(
            f"--host {host}: the console listens beyond this machine only with a token; set "
            f"${TOKEN_ENV} (at least {MIN_TOKEN_CHARS} characters), or listen on 127.0.0.1"
        )
    return token


class Guard:
    """The token check and the CSRF tokens of one console process."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._csrf_key = secrets.token_bytes(32)  # new per process: old forms stop working

    @property
    def login_required(self) -> bool:
        return self.token is not None

    def auth_cookie_value(self) -> str:
        assert self.token is not None  # noqa: S101 - only called when a token is set
        return hmac.new(self.token.encode(), b"hookstream-console", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        assert self.token is not None  # noqa: S101 - only called when a token is set
        return hmac.compare_digest(given.encode(), self.token.encode())

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and self.token_matches(bearer[len("Bearer ") :]):
            return True
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.auth_cookie_value().encode())

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._csrf_key, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str, given: str) -> bool:
        return bool(session) and hmac.compare_digest(
            given.encode(), self.csrf_token(session).encode()
        )


def session_of(request: web.Request) -> str:
    """The browser's session id: its cookie, or the one this response is about to set."""
    return str(request.get("console_session") or request.cookies.get(SESSION_COOKIE, ""))


def _same_origin(request: web.Request) -> bool:
    """No ``Origin`` (a non-browser client, which must still send the CSRF field), or ours."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def middleware(guard: Guard) -> Middleware:
    """The aiohttp middleware that applies the rules of the module docstring."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path.startswith(PUBLIC_PREFIXES)
        if not public and not guard.authorized(request):
            if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="a token is required: log in at /login")
        new_session = None
        if not request.cookies.get(SESSION_COOKIE):
            new_session = secrets.token_urlsafe(32)
            request["console_session"] = new_session
        if request.method == "POST":
            form = await request.post()
            given = form.get(CSRF_FIELD)
            if (
                not isinstance(given, str)
                or not guard.csrf_ok(session_of(request), given)
                or not _same_origin(request)
            ):
                raise web.HTTPForbidden(text="the form is stale or not this console's: reload it")
        response = await handler(request)
        if response.prepared:  # a stream (the live view): its headers are sent already
            return response
        response.headers.update(SECURITY_HEADERS)
        if new_session is not None:
            response.set_cookie(
                SESSION_COOKIE, new_session, httponly=True, samesite="Strict", path="/"
            )
        return response

    return check


GUARD = web.AppKey("guard", Guard)


def csrf_for(request: web.Request) -> str:
    """The CSRF token for the forms of the page answering ``request``."""
    return request.app[GUARD].csrf_token(session_of(request))
