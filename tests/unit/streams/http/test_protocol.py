"""The gateway's HTTP/1.1 layer (streams/http/) over real loopback sockets.

A small application stands in for the gateway (tests/support/http1.py); the client side is raw
bytes on a socket, so framing, ordering and closing are seen exactly as a sender sees them.
Time is the test's own clock: a timeout fires when a test advances it, never by sleeping. The
protections against hostile clients are in test_protections.py.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib

import orjson
import pytest

from streams.http.message import Response
from streams.http.protocol import LINGER_S, MAX_HEAD_BYTES, MAX_QUEUED
from tests.support.http1 import (
    IDLE_TIMEOUT_S,
    LIMIT,
    SWEEP_S,
    Served,
    closed,
    post,
    read_answer,
    until,
)


async def test_pipelined_requests_are_answered_in_order_even_when_the_first_waits(
    served: Served,
) -> None:
    client = await served.open()
    reader, writer = client.reader, client.writer
    writer.write(post("/hold", b"first") + post("/echo", b"second") + post("/echo", b"third"))
    await until(
        lambda: len(client.connection._queue) == 2 or len(served.app.bodies) > 1,
        "both later requests to be queued",
    )
    # The later requests are not handled ahead of the held one.
    assert served.app.bodies == [b"first"]
    served.app.held[0].set_result(Response(201, b'{"held":true}'))
    answers = [await read_answer(reader) for _ in range(3)]
    assert [a.status for a in answers] == [201, 200, 200]
    assert [orjson.loads(a.body).get("body") for a in answers[1:]] == ["second", "third"]
    writer.close()


async def test_more_pipelined_requests_than_the_queue_holds_are_all_answered(
    served: Served,
) -> None:
    client = await served.open()
    reader, writer = client.reader, client.writer
    count = MAX_QUEUED * 3
    writer.write(post("/hold", b"0") + b"".join(post("/echo", b"%d" % i) for i in range(1, count)))
    await until(lambda: client.connection._reading_paused_s is not None, "reading paused")
    served.app.held[0].set_result(Response(200, b'{"body":"0"}'))
    bodies = [orjson.loads((await read_answer(reader)).body)["body"] for _ in range(count)]
    assert bodies == [str(i) for i in range(count)]
    writer.close()


async def test_keep_alive_serves_several_requests_on_one_connection(served: Served) -> None:
    reader, writer = await served.connect()
    for i in range(3):
        writer.write(post("/echo", b"n%d" % i, "X-Signature: v1,abc"))
        answer = await read_answer(reader)
        assert answer.status == 200
        echoed = orjson.loads(answer.body)
        assert echoed["body"] == f"n{i}"
        assert echoed["signature"] == "v1,abc"  # header names match whatever their case
        assert echoed["peer"] == "127.0.0.1"
        assert "connection" not in answer.headers
        assert answer.headers["date"].endswith("GMT")
    writer.close()


async def test_connection_close_and_http_1_0_end_the_connection(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(post("/echo", b"x", "Connection: close"))
    answer = await read_answer(reader)
    assert answer.headers["connection"] == "close"
    assert await closed(reader)
    writer.close()
    reader, writer = await served.connect()
    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
    assert (await read_answer(reader)).status == 200
    assert await closed(reader)
    writer.close()
    reader, writer = await served.connect()
    writer.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    answer = await read_answer(reader)
    assert answer.headers["connection"] == "keep-alive"
    writer.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (await read_answer(reader)).status == 200
    writer.close()


async def test_a_malformed_request_is_400_and_the_connection_closes(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
    answer = await read_answer(reader)
    assert answer.status == 400
    assert orjson.loads(answer.body)["code"] == "malformed_request"
    assert await closed(reader)
    writer.close()
    assert served.app.bodies == []


async def test_a_head_over_the_limit_is_431(served: Served) -> None:
    reader, writer = await served.connect()
    padding = "X-Pad: " + "p" * 1000
    writer.write(("GET /echo HTTP/1.1\r\n" + "\r\n".join([padding] * 80) + "\r\n\r\n").encode())
    answer = await read_answer(reader)
    assert answer.status == 431
    assert str(MAX_HEAD_BYTES) in orjson.loads(answer.body)["detail"]
    assert await closed(reader)
    writer.close()


async def test_a_chunked_body_is_reassembled(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    answer = await read_answer(reader)
    assert orjson.loads(answer.body)["body"] == "hello world"
    writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413_and_never_handled(served: Served, framing: str) -> None:
    reader, writer = await served.connect()
    big = b"x" * (LIMIT + 1)
    if framing == "content-length":
        writer.write(post("/echo", big))
    else:
        chunk = b"%x\r\n%s\r\n" % (len(big), big)
        writer.write(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
    answer = await read_answer(reader)
    assert answer.status == 413
    assert await closed(reader)
    writer.close()
    assert served.app.bodies == []


@pytest.mark.parametrize(
    ("coding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, no zlib wrapper
    ],
)
async def test_encoded_bodies_are_decoded(served: Served, coding: str, pack: object) -> None:
    assert callable(pack)
    reader, writer = await served.connect()
    writer.write(post("/echo", pack(b'{"x": 1}'), f"Content-Encoding: {coding}"))
    answer = await read_answer(reader)
    assert answer.status == 200
    assert orjson.loads(answer.body)["body"] == '{"x": 1}'
    writer.close()


async def test_two_gzip_members_are_both_decoded(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(
        post("/echo", gzip.compress(b"one,") + gzip.compress(b"two"), "Content-Encoding: gzip")
    )
    assert orjson.loads((await read_answer(reader)).body)["body"] == "one,two"
    writer.close()


async def test_bad_encodings_are_refused_with_what_to_fix(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(post("/echo", b"not gzip at all", "Content-Encoding: gzip"))
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (400, "invalid_encoding")
    writer.write(post("/echo", gzip.compress(b"x" * 100)[:-10], "Content-Encoding: gzip"))
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (400, "invalid_encoding")
    writer.write(post("/echo", b"x", "Content-Encoding: br"))
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (415, "unsupported_media_type")
    writer.close()
    assert served.app.bodies == []


async def test_a_compression_bomb_stops_at_the_limit(served: Served) -> None:
    reader, writer = await served.connect()
    bomb = gzip.compress(b"\0" * (LIMIT * 1000))  # ~4 MB unpacked, a few KiB packed
    assert len(bomb) < LIMIT
    writer.write(post("/echo", bomb, "Content-Encoding: gzip"))
    answer = await read_answer(reader)
    assert answer.status == 413
    assert "decompressed" in orjson.loads(answer.body)["detail"]
    writer.close()


async def test_a_refused_head_without_expect_keeps_the_connection(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(post("/refuse", b"discarded") + post("/echo", b"kept"))
    first, second = await read_answer(reader), await read_answer(reader)
    assert first.status == 403
    assert orjson.loads(second.body)["body"] == "kept"
    assert served.app.bodies == [b"kept"]  # the refused body never reached the application
    writer.close()


async def test_expect_100_continue_comes_only_for_an_accepted_head(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    assert orjson.loads((await read_answer(reader)).body)["body"] == "ok"
    writer.close()
    reader, writer = await served.connect()
    writer.write(b"POST /refuse HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    answer = await read_answer(reader)
    assert answer.status == 403  # the final answer, no 100 ahead of it
    assert await closed(reader)  # the body was never asked for, so it is never read
    writer.close()


async def test_head_answers_without_a_body(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"HEAD /echo HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n")
    head = await read_answer(reader, head_only=True)
    assert int(head.headers["content-length"]) > 0
    get = await read_answer(reader)  # would be misread if HEAD's answer carried a body
    assert orjson.loads(get.body)["method"] == "GET"
    writer.close()


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/a%20b?x=1", "/a b"),
        ("http://example.com/webhooks/s?q", "/webhooks/s"),
        ("/caf%C3%A9", "/café"),
    ],
)
async def test_the_path_is_decoded_without_its_query(
    served: Served, target: str, path: str
) -> None:
    reader, writer = await served.connect()
    writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert orjson.loads((await read_answer(reader)).body)["path"] == path
    writer.close()


async def test_an_upgrade_is_refused_and_the_connection_closes(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (400, "malformed_request")
    assert await closed(reader)
    writer.close()


async def test_a_bug_in_the_application_is_a_500_not_a_hang(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(post("/boom", b"") + post("/echo", b"after"))
    assert (await read_answer(reader)).status == 500
    assert orjson.loads((await read_answer(reader)).body)["body"] == "after"
    writer.close()


async def test_an_idle_connection_is_closed(served: Served) -> None:
    client = await served.open()
    client.writer.write(post("/echo", b"x"))
    await read_answer(client.reader)
    served.clock.advance(IDLE_TIMEOUT_S)  # idle for exactly the limit: not yet
    assert not client.closing()
    served.clock.advance(SWEEP_S)  # past it, at the next sweep
    assert client.closing()
    assert await closed(client.reader)
    client.writer.close()


async def test_close_answers_the_request_in_progress_and_refuses_new_connections(
    served: Served,
) -> None:
    port = served.server.port
    reader, writer = await served.connect()
    idle_reader, idle_writer = await served.connect()
    writer.write(post("/hold", b"in flight"))
    await until(lambda: served.app.held, "the request to be handled")
    closing = asyncio.create_task(served.server.close(5.0))
    await until(lambda: served.server.closing, "close() to begin")
    assert await closed(idle_reader)  # an idle connection goes at once
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    served.app.held[0].set_result(Response(202, b'{"late":true}'))
    answer = await read_answer(reader)
    assert (answer.status, answer.headers["connection"]) == (202, "close")
    assert await closed(reader)
    assert not closing.done()  # lingering: what the client still sends is read and dropped
    writer.close()  # the client closes its side: the connection closes, and with it close()
    await asyncio.wait_for(closing, timeout=5)
    assert served.server.connections == set()
    idle_writer.close()


async def test_close_gives_up_on_what_is_still_unanswered_after_its_timeout(
    served: Served,
) -> None:
    client = await served.open()
    client.writer.write(post("/hold", b"never answered"))
    await until(lambda: served.app.held, "the request to be handled")
    closing = asyncio.create_task(served.server.close(3.0))
    await until(lambda: served.server.closing, "close() to begin")
    served.clock.advance(2.9)
    await asyncio.sleep(0)  # one turn of the loop: close() would resume in it, were time up
    assert not closing.done()
    assert not client.closing()
    served.clock.advance(0.2)
    await asyncio.wait_for(closing, timeout=5)
    assert client.closing()
    assert await closed(client.reader)  # aborted, without an answer
    client.writer.close()


async def test_a_client_that_never_closes_its_side_is_closed_after_the_linger(
    served: Served,
) -> None:
    client = await served.open()
    client.send(post("/echo", b"last", "Connection: close"))
    answer = await read_answer(client.reader)
    assert answer.headers["connection"] == "close"
    assert await closed(client.reader)  # our side is shut for writing (FIN) ...
    client.send(b"still sending")
    await client.delivered()
    served.clock.advance(LINGER_S)
    assert not client.closing()  # ... and still reads, up to LINGER_S
    served.clock.advance(SWEEP_S)
    assert client.closing()
    await until(lambda: not served.server.connections, "the connection to close")
    client.writer.close()


async def test_a_refusal_ahead_of_a_large_body_reaches_the_sender_whole(served: Served) -> None:
    # The sender keeps sending the body it announced after the 413 went out. Closing the
    # socket on data not read would reset the connection, and the reset can destroy the
    # answer before the sender reads it.
    client = await served.open()
    reader, writer = client.reader, client.writer
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
    await until(lambda: served.server.requests_count == 1, "the 413 to be written")
    for _ in range(16):
        client.send(b"x" * 16384)
        await writer.drain()
    await client.delivered()  # read (and dropped) after the answer, not refused with a reset
    assert not client.closing()
    answer = await read_answer(reader)
    assert answer.status == 413
    assert orjson.loads(answer.body)["code"] == "payload_too_large"
    assert await closed(reader)
    writer.close()
