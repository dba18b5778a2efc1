"""The model call's HTTP client (agents.outbound.wire.JsonPoster) against a raw local server
that answers exactly as each test scripts it: what it sends, what it reads of the answer
(length, chunks, gzip), when it reuses a connection, and how each failure maps onto the
exception tree (the same messages as request_json's)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from agents.outbound import wire
from agents.outbound.wire import JsonPoster, WireClient
from schemas import tracecontext
from schemas.errors import PermanentRemoteError, RetriableRemoteError, UnsafeDestination
from tests.support.sockets import port_that_never_accepts

Reply = Callable[[bytes], bytes | None]  # request bytes -> answer bytes (None: close)


def answer(status: int, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Server:
    """Reads one request at a time (head, then Content-Length bytes) and writes ``reply``'s."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                out = self.reply(request)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[tuple[Server, str]]:
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}/v1/chat/completions?x=1"
    finally:
        listener.close()
        await listener.wait_closed()


def poster(url: str, headers: dict[str, str] | None = None) -> JsonPoster:
    return JsonPoster(url, headers or {}, what="provider sim", stage="ai", connect_timeout_s=0.5)


async def test_a_post_sends_its_headers_and_body_and_reuses_the_connection() -> None:
    async with serving(lambda _: answer(200, b'{"ok": 1}')) as (server, url):
        client = poster(url, {"Authorization": "Bearer k"})
        try:
            context = tracecontext.new_trace()
            token = tracecontext.activate(context)
            try:
                assert await client.post(b'{"a": 1}', timeout_s=5) == (200, {"ok": 1})
            finally:
                tracecontext.restore(token)
            assert await client.post(b'{"a": 2}', timeout_s=5) == (200, {"ok": 1})
        finally:
            client.close()
    first, second = server.requests
    head, body = first.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: {url.split('/')[2]}" in lines
    assert "Authorization: Bearer k" in lines
    assert "Content-Type: application/json" in lines
    assert "User-Agent: hookstream" in lines
    assert "Content-Length: 8" in lines
    assert f"traceparent: {context.traceparent()}" in lines
    assert body == b'{"a": 1}'
    assert second.endswith(b'{"a": 2}')
    assert b"traceparent" not in second
    assert server.connections == 1


async def test_chunked_and_gzip_answers_are_read_whole() -> None:
    payload = orjson.dumps({"choices": ["x" * 5000]})
    packed = gzip.compress(payload)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 1000]), packed[i : i + 1000])
        for i in range(0, len(packed), 1000)
    )
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    async with serving(lambda _: reply) as (_, url):
        client = poster(url)
        try:
            assert await client.post(b"{}", timeout_s=5) == (200, orjson.loads(payload))
        finally:
            client.close()


async def test_statuses_map_as_request_json_maps_them() -> None:
    replies = iter(
        [
            answer(429, b"slow down", "Retry-After: 7"),
            answer(400, b'{"error": "bad schema"}'),
            answer(200, b"not json"),
        ]
    )
    async with serving(lambda _: next(replies)) as (_, url):
        client = poster(url)
        try:
            with pytest.raises(RetriableRemoteError, match="provider sim: HTTP 429") as limited:
                await client.post(b"{}", timeout_s=5)
            assert limited.value.retry_after_s == 7.0
            with pytest.raises(PermanentRemoteError, match=r"HTTP 400: .*bad schema"):
                await client.post(b"{}", timeout_s=5)
            assert await client.post(b"{}", timeout_s=5) == (200, None)
        finally:
            client.close()


async def test_a_connection_closed_before_the_answer_is_retriable_and_not_reused() -> None:
    replies = iter([None, answer(200, b"{}")])
    async with serving(lambda _: next(replies)) as (server, url):
        client = poster(url)
        try:
            with pytest.raises(RetriableRemoteError, match="provider sim: _Lost: connection"):
                await client.post(b"{}", timeout_s=5)
            assert await client.post(b"{}", timeout_s=5) == (200, {})
        finally:
            client.close()
    assert server.connections == 2


async def test_an_answer_later_than_the_timeout_is_retriable_and_its_connection_closed() -> None:
    async with serving(lambda _: b"") as (server, url):  # reads the request, never answers
        client = poster(url)
        try:
            with pytest.raises(RetriableRemoteError, match=r"no answer within 0\.2 s"):
                await client.post(b"{}", timeout_s=0.2)
        finally:
            client.close()
    assert len(server.requests) == 1


async def test_a_refused_connection_is_retriable() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    client = poster(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(RetriableRemoteError, match="provider sim: ConnectionRefusedError"):
        await client.post(b"{}", timeout_s=5)


async def test_a_peer_that_never_completes_the_handshake_is_bounded_by_the_connect_timeout() -> (
    None
):
    """As for request_json: a full accept queue drops further SYNs."""
    with port_that_never_accepts() as port:
        client = poster(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(RetriableRemoteError, match=r"could not connect within 0\.5 s"):
            await client.post(b"{}", timeout_s=5)


def test_a_header_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="provider sim: header Authorization") as refused:
        poster("http://127.0.0.1:1/v1", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    assert "Bearer" not in str(refused.value)


async def answer_then_close(raw_answer: bytes) -> tuple[asyncio.Server, str]:
    """A server that reads one request's head and body, writes ``raw_answer`` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(raw_answer)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    return listener, f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.mark.parametrize(
    "raw_answer",
    [
        pytest.param(b'HTTP/1.0 200 OK\r\n\r\n{"ok": 2}', id="http-1.0"),
        pytest.param(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ok": 2}', id="close"),
        pytest.param(
            b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"ok": 2}',
            id="interim-100",
        ),
    ],
)
async def test_an_answer_ended_by_the_close_or_after_an_interim_one_is_read_whole(
    raw_answer: bytes,
) -> None:
    # Failing these would retry a call the provider answered: paid twice.
    listener, url = await answer_then_close(raw_answer)
    client = poster(url)
    try:
        assert await client.post(b"{}", timeout_s=2.0) == (200, {"ok": 2})
    finally:
        client.close()
        listener.close()
        await listener.wait_closed()


# The sinks' requests (JsonPoster.request, WireClient): any method, per-request headers.


def sink_client(public_only: bool = False) -> WireClient:
    return WireClient(
        {"Authorization": "Bearer k", "X-Team": "a"},
        what="sink crm",
        stage="sink",
        connect_timeout_s=0.5,
        public_only=public_only,
    )


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH"])
async def test_a_sink_request_sends_its_method_target_and_headers_on_one_connection(
    method: str,
) -> None:
    async with serving(lambda _: answer(204, b"")) as (server, url):
        origin = url.split("/v1/")[0]
        client = sink_client()
        try:
            for customer in ("c 1", "c2"):  # a literal space is percent-encoded, as yarl did
                status = await client.request(
                    method,
                    f"{origin}/customers/{customer}?v=1",
                    b'{"s": 1}',
                    timeout_s=5,
                    headers={"Idempotency-Key": f"web/{customer}/f/crm"},
                    ok_statuses=frozenset({200, 204}),
                )
                assert status == (204, None)
        finally:
            client.close()
    first, second = server.requests
    lines = first.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0] == f"{method} /customers/c%201?v=1 HTTP/1.1"
    assert "Authorization: Bearer k" in lines
    assert "X-Team: a" in lines
    assert "Idempotency-Key: web/c 1/f/crm" in lines
    assert "Content-Length: 8" in lines
    assert second.startswith(f"{method} /customers/c2?v=1 HTTP/1.1".encode())
    assert b"Idempotency-Key: web/c2/f/crm\r\n" in second
    assert server.connections == 1


async def test_a_sink_request_maps_statuses_outside_its_success_codes() -> None:
    replies = iter(
        [answer(503, b"down", "Retry-After: 3"), answer(422, b"bad"), answer(200, b"{}")]
    )
    async with serving(lambda _: next(replies)) as (_, url):
        client = sink_client()
        try:
            kwargs: dict[str, Any] = {
                "timeout_s": 5,
                "headers": {"Idempotency-Key": "k"},
                "ok_statuses": frozenset({201}),
            }
            with pytest.raises(RetriableRemoteError, match="sink crm: HTTP 503") as down:
                await client.request("PUT", url, b"{}", **kwargs)
            assert (down.value.status, down.value.retry_after_s) == (503, 3.0)
            with pytest.raises(PermanentRemoteError, match="sink crm: HTTP 422: bad") as bad:
                await client.request("PUT", url, b"{}", **kwargs)
            assert bad.value.status == 422
            # 200 is not among this sink's success codes: a permanent failure too.
            with pytest.raises(PermanentRemoteError, match="HTTP 200"):
                await client.request("PUT", url, b"{}", **kwargs)
        finally:
            client.close()


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(
    "raw_answer",
    [
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n{}", id="http-1.0"),
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}", id="close"),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            id="interim-100",
        ),
    ],
)
async def test_a_sink_answer_ended_by_the_close_or_after_an_interim_one_is_read_whole(
    method: str, raw_answer: bytes
) -> None:
    # Failing these would retry a delivery the target applied: sent twice.
    listener, url = await answer_then_close(raw_answer)
    client = sink_client()
    try:
        status = await client.request(
            method, url, b"{}", timeout_s=2.0, headers={"Idempotency-Key": "k"}
        )
        assert status == (200, {})
    finally:
        client.close()
        listener.close()
        await listener.wait_closed()


async def test_a_sink_header_with_a_line_break_is_a_permanent_error_and_nothing_is_sent() -> None:
    async with serving(lambda _: answer(200, b"{}")) as (server, url):
        client = sink_client()
        try:
            with pytest.raises(PermanentRemoteError, match="header Idempotency-Key holds"):
                await client.request(
                    "PUT", url, b"{}", timeout_s=5, headers={"Idempotency-Key": "a\r\nX: 1"}
                )
        finally:
            client.close()
    assert server.requests == []


async def test_a_public_only_client_connects_to_no_private_address() -> None:
    """The check when connecting (PublicOnlyResolver's for aiohttp): a name resolving to
    loopback gets no connection, whatever a check before the request said."""
    async with serving(lambda _: answer(200, b"{}")) as (server, url):
        port = url.split("/")[2].split(":")[1]
        guarded, plain = sink_client(public_only=True), sink_client()
        try:
            with pytest.raises(UnsafeDestination) as refused:
                await guarded.request(
                    "PUT", f"http://localhost:{port}/x", b"{}", timeout_s=5, headers={}
                )
            assert await plain.request(
                "PUT", f"http://localhost:{port}/x", b"{}", timeout_s=5, headers={}
            ) == (200, {})
        finally:
            guarded.close()
            plain.close()
    assert str(refused.value).startswith("sink crm: host 'localhost' resolved to non-public")
    assert not refused.value.retriable
    assert len(server.requests) == 1  # the plain client's only


async def test_a_public_only_client_refuses_a_redirect() -> None:
    """Its target was never checked: a permanent error saying so, as request_json's."""
    async with serving(lambda _: answer(302, b"", "Location: http://10.0.0.1/")) as (_, url):
        client = JsonPoster(url, {}, what="sink crm", stage="sink", connect_timeout_s=0.5)
        # The server is on loopback, where a public-only client cannot connect: its
        # connection is opened first, then the client made public-only.
        with pytest.raises(PermanentRemoteError) as unguarded:
            await client.request("PUT", "/x", b"{}", timeout_s=5, headers={})
        assert "redirect" not in str(unguarded.value)  # a plain status error
        client.public_only = True
        try:
            with pytest.raises(PermanentRemoteError, match="redirect, not followed") as moved:
                await client.request("PUT", "/x", b"{}", timeout_s=5, headers={})
        finally:
            client.close()
    assert moved.value.status == 302


async def test_credentials_in_a_sink_url_go_as_basic_auth() -> None:
    async with serving(lambda _: answer(200, b"{}")) as (server, url):
        client = WireClient({}, what="sink crm", stage="sink", connect_timeout_s=0.5)
        try:
            await client.request(
                "POST", url.replace("http://", "http://u%40x:p@"), b"{}", timeout_s=5, headers={}
            )
        finally:
            client.close()
    basic = base64.b64encode(b"u@x:p").decode()
    assert f"Authorization: Basic {basic}\r\n".encode() in server.requests[0]


async def test_a_connection_idle_past_the_expiry_is_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server closes an idle keep-alive connection after a few seconds (Node's, uvicorn's 5);
    # a request sent on it as it closes fails. One idle longer than IDLE_EXPIRY_S is closed
    # and a new one opened; one idle less is reused.
    monkeypatch.setattr(wire, "IDLE_EXPIRY_S", 0.2)
    async with serving(lambda _: answer(200, b"{}")) as (server, url):
        client = poster(url)
        try:
            await client.post(b"{}", timeout_s=5)
            await client.post(b"{}", timeout_s=5)  # at once: the same connection
            assert server.connections == 1
            kept = client._idle[0]
            await asyncio.sleep(0.3)
            await client.post(b"{}", timeout_s=5)
            assert server.connections == 2
            assert kept.closed
        finally:
            client.close()
    assert len(server.requests) == 3
