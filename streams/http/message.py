"""What :mod:`streams.http.protocol` hands an application and takes back, and their codecs.

Kept apart from the protocol so that each can be read on its own: here the request and
response types, the application's interface, the request target and header decoding, body
content codings (gzip, deflate) held to a size limit, and the encoding of an answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from schemas.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType, WebhookRejected

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_GZIP_MEMBERS = 16
CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}


@dataclass(slots=True, eq=False)
class Request:
    """One request; ``body`` is set once the whole of it has arrived (and been decoded).

    ``headers`` map case-insensitively; values are decoded as UTF-8 (what senders sign), or
    as ISO-8859-1 when they are not UTF-8, so that a header never fails to decode or to be
    written out again. ``context`` is the application's: what ``check_head`` found (e.g. the
    source) for ``handle`` to use.
    """

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    peer: str | None
    http_version: str
    body: bytes = b""
    keep_alive: bool = True
    context: Any = None
    #: The request target as received (path and query, not decoded): senders that sign the
    #: URL they post to sign its query too (streams.gateway.signatures.url_signed).
    target: bytes = b""


@dataclass(slots=True)
class Response:
    """An answer: Content-Length, Date and Connection are added when it is written."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] | None = None


class Application(Protocol):
    def check_head(self, request: Request) -> Response | None:
        """Before the body: a Response refuses the request, None lets its body be read."""

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """The whole request: its answer, now or later."""

    def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
        """The answer to a refusal the server itself makes (size, timeout, encoding, syntax)."""


@dataclass
class Limits:
    max_body_bytes: int
    body_timeout_s: float
    idle_timeout_s: float


def header_text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def request_path(url: bytes) -> str:
    """The request target's path, percent-decoded, without its query."""
    if url[:1] != b"/":  # absolute form ("http://host/path"), or "*"
        try:
            url = httptools.parse_url(url).path or b""
        except httptools.HttpParserInvalidURLError:
            return ""
    path = url.partition(b"?")[0]
    if b"%" in path:
        return unquote(path.decode("utf-8", "replace"))
    return path.decode("utf-8", "replace")


def placeholder(peer: str | None) -> Request:
    """The request an answer is written for when none could be read (a malformed one)."""
    return Request("GET", "", CIMultiDictProxy(CIMultiDict()), peer, "1.1")


def framing_error(headers: CIMultiDictProxy[str], limit: int) -> WebhookRejected | None:
    """What the server itself refuses in a head: a declared length over the limit (413), an
    encoding it cannot decode (415)."""
    length = headers.get("Content-Length")
    if length is not None and length.isascii() and length.isdigit():
        digits = length.lstrip("0")
        if len(digits) > 18:  # int() of thousands of digits is refused (and slow)
            return PayloadTooLarge(f"the declared body exceeds the limit of {limit} bytes")
        if digits and int(digits) > limit:
            return PayloadTooLarge(f"body of {digits} bytes exceeds the limit of {limit} bytes")
    coding = headers.get("Content-Encoding")
    if coding is not None:
        coding = coding.strip().lower()
        if coding not in CODINGS and coding not in ("", "identity"):
            return UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not accepted; send the body as it is, or "
                "gzip or deflate it"
            )
    return None


def decode_body(body: bytes, coding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, held to ``limit`` bytes once decoded."""
    wbits = CODINGS.get(coding)
    if wbits is None:  # identity (other codings were refused with the head)
        return body
    plain = _inflate(body, wbits, limit)
    if plain is None and coding == "deflate":  # without its zlib wrapper, as some send it
        plain = _inflate(body, -zlib.MAX_WBITS, limit)
    if plain is None:
        raise InvalidPayload(
            f"the body is not valid {coding} (or is truncated, or has over "
            f"{MAX_GZIP_MEMBERS} gzip members)",
            code="invalid_encoding",
        )
    if len(plain) > limit:
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes once decompressed")
    return plain


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    """Decompress, stopping past ``limit`` bytes of output: a small bomb never costs more than
    the limit. None: not valid, or not complete.

    gzip allows several members back to back (what concatenated .gz files are); at most
    :data:`MAX_GZIP_MEMBERS` are read, since each one costs a pass over the rest of the body
    (thousands of empty members would cost seconds of CPU). A zlib or raw deflate body is one
    stream, and anything after it makes it invalid.
    """
    members = MAX_GZIP_MEMBERS if wbits > zlib.MAX_WBITS else 1
    parts: list[bytes] = []
    size = 0
    try:
        while data:
            if not members:
                return None
            members -= 1
            decoder = zlib.decompressobj(wbits)
            part = decoder.decompress(data, limit + 1 - size)
            parts.append(part)
            size += len(part)
            if size > limit:
                break
            if not decoder.eof:
                return None
            data = decoder.unused_data
    except zlib.error:
        return None
    return b"".join(parts)


def encode_response(
    request: Request, response: Response, *, close: bool, date_line: bytes
) -> bytes:
    """The answer's bytes: status line, headers (ours and the response's), body unless HEAD."""
    body = response.body
    status_line = _STATUS_LINES.get(response.status)
    if status_line is None:
        status_line = f"HTTP/1.1 {response.status} Unknown\r\n".encode()
    head = [
        status_line,
        b"Content-Type: %s\r\nContent-Length: %d\r\n"
        % (response.content_type.encode("latin-1"), len(body)),
        date_line,
    ]
    if response.headers:
        head.extend(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers.items()
        )
    if close:
        head.append(b"Connection: close\r\n")
    elif request.http_version == "1.0":
        head.append(b"Connection: keep-alive\r\n")
    head.append(b"\r\n")
    if request.method != "HEAD":
        head.append(body)
    return b"".join(head)


def internal_error(exc: BaseException) -> Response:
    """A bug's answer: 500, with the exception's type only (its text may hold anything)."""
    detail = f"the gateway failed ({type(exc).__name__}); the event was not accepted"
    body = (
        b'{"type":"https://hookstream.dev/problems/internal_error","title":"Internal error",'
        b'"status":500,"detail":"%s","code":"internal_error"}' % detail.encode()
    )
    return Response(500, body, "application/problem+json")
