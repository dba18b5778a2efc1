"""The HTTP/1.1 layer against clients that misbehave, and against bugs in the application.

Each test is a way a client (or our own code) could make the server use unbounded memory, lose
an answer it owed, or hang; the client side is raw bytes on a loopback socket. Time is the
test's own clock (tests/support/clock.py): a timeout fires when a test advances it past it, and
where a test must know that the server has read something it waits for that, never sleeps.
"""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest

from streams.http.message import MAX_GZIP_MEMBERS, Response
from streams.http.protocol import MAX_FRAMING_BYTES, MAX_HEAD_BYTES, MAX_PIPELINED, MAX_QUEUED
from tests.support.http1 import (
    BIG_ANSWER_BYTES,
    BODY_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    SWEEP_S,
    Client,
    Served,
    closed,
    post,
    read_answer,
    until,
)


async def send_in_parts(client: Client, data: bytes, *, pieces: int) -> None:
    """``data`` in ``pieces`` writes, each read by the server before the next is sent (until
    the server closes), so that the server sees it in parts."""
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        if client.closing():
            return
        client.send(data[start : start + size])
        await until(
            lambda: client.read_bytes >= client.sent_bytes or client.closing(),
            "the server to read the part",
        )


@pytest.mark.parametrize(
    ("start", "limit_bytes", "status", "code"),
    [
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Long: ", MAX_HEAD_BYTES, 431, "head_too_large"),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Trailer: ",
            MAX_FRAMING_BYTES,
            413,
            "payload_too_large",
        ),
    ],
    ids=["header-value", "trailer"],
)
async def test_one_endless_header_is_refused_before_it_ends(
    served: Served, start: bytes, limit_bytes: int, status: int, code: str
) -> None:
    # The parser hands a header (or a trailer) over only once its value ends, buffering it
    # meanwhile: the limits have to be held on the bytes read too, or one value could grow
    # without bound.
    client = await served.open()
    reader, writer = client.reader, client.writer
    client.send(start)
    await client.delivered()
    await send_in_parts(client, b"a" * (limit_bytes + 16 * 1024), pieces=10)
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (status, code)
    assert served.app.bodies == []
    assert await closed(reader)
    writer.close()


async def test_a_client_not_reading_its_answers_stops_its_requests_being_handled(
    served: Served,
) -> None:
    # 100 pipelined requests of 256 KiB answers each: were they all handled while the client
    # reads nothing, what the kernel's socket buffers do not take (most of 25 MiB) would wait
    # in the server's memory.
    count = 100
    client = await served.open()
    reader, writer, connection = client.reader, client.writer, client.connection
    writer.write(b"".join(post("/big", b"%d" % i) for i in range(count)))
    # Once writing pauses the server is done for now: the rest waits until the client reads.
    await until(lambda: connection._writing_paused_s is not None, "writing to pause")
    assert connection._transport is not None
    buffered_bytes = connection._transport.get_write_buffer_size()
    assert buffered_bytes <= 2 * BIG_ANSWER_BYTES
    assert len(served.app.bodies) < count
    answers = [await read_answer(reader) for _ in range(count)]
    assert [len(a.body) for a in answers] == [BIG_ANSWER_BYTES] * count
    assert served.app.bodies == [b"%d" % i for i in range(count)]  # every one, in order
    writer.close()


async def test_past_the_pipelining_limit_the_connection_closes_after_its_answers(
    served: Served,
) -> None:
    client = await served.open()
    reader, writer = client.reader, client.writer
    count = MAX_PIPELINED + 50
    client.send(post("/hold", b"0") + b"".join(post("/echo", b"%d" % i) for i in range(1, count)))
    await client.delivered()
    served.app.held[0].set_result(Response(200, b'{"body":"0"}'))
    # The held one, then the MAX_PIPELINED that waited behind it.
    answers = [await read_answer(reader) for _ in range(MAX_PIPELINED + 1)]
    expected = [str(i) for i in range(MAX_PIPELINED + 1)]
    assert [orjson.loads(a.body)["body"] for a in answers] == expected
    assert answers[-1].headers["connection"] == "close"
    assert await closed(reader)  # the rest were never read: the sender sends them again
    writer.close()


async def test_utf8_header_values_reach_the_application_as_sent(served: Served) -> None:
    # Senders sign header values as the UTF-8 they send; decoding them as ISO-8859-1 would
    # make every non-ASCII value fail its signature.
    reader, writer = await served.connect()
    writer.write(post("/echo", b"x", "X-Signature: caf\u00e9 \u2603"))  # encoded as UTF-8
    answer = await read_answer(reader)
    assert orjson.loads(answer.body)["signature"] == "caf\u00e9 \u2603"
    writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nX-Signature: \xe9t\xe9\r\n\r\nx")
    answer = await read_answer(reader)
    assert orjson.loads(answer.body)["signature"] == "\u00e9t\u00e9"  # not UTF-8: ISO-8859-1
    writer.close()


async def test_a_head_too_slow_behind_a_waiting_request_still_gets_that_answer(
    served: Served,
) -> None:
    client = await served.open()
    reader, writer = client.reader, client.writer
    client.send(post("/hold", b"owed") + b"POST /echo HTTP/1.1\r\nHo")
    await client.delivered()
    served.clock.advance(IDLE_TIMEOUT_S + SWEEP_S)  # the second head is dropped
    served.app.held[0].set_result(Response(202, b'{"owed":true}'))
    answer = await read_answer(reader)
    assert (answer.status, answer.headers["connection"]) == (202, "close")
    assert await closed(reader)
    writer.close()


async def test_the_body_clock_stops_while_the_server_is_not_reading(served: Served) -> None:
    # Reading pauses while MAX_QUEUED requests wait behind a held one; the next request's
    # body cannot arrive meanwhile, so that wait is not the sender's delay (no 408).
    client = await served.open()
    reader, writer, connection = client.reader, client.writer, client.connection
    queued = b"".join(post("/echo", b"%d" % i) for i in range(1, MAX_QUEUED + 1))
    last_head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n"
    client.send(post("/hold", b"0") + queued + last_head)
    await client.delivered()
    assert connection._reading_paused_s is not None
    served.clock.advance(2 * BODY_TIMEOUT_S)  # the last head waits, its body cannot come
    served.app.held[0].set_result(Response(200, b'{"body":"0"}'))
    answers = [await read_answer(reader) for _ in range(MAX_QUEUED + 1)]
    assert {a.status for a in answers} == {200}
    # Reading again: the body's clock goes on from where it stopped, not from its head.
    served.clock.advance(SWEEP_S)
    writer.write(b"last")
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["body"]) == (200, "last")
    writer.close()


async def test_closing_lets_a_request_that_is_arriving_finish(served: Served) -> None:
    client = await served.open()
    reader, writer = client.reader, client.writer
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf ")
    await client.delivered()
    closing = asyncio.create_task(served.server.close(5.0))
    await until(lambda: served.server.closing, "close() to begin")
    writer.write(b"done!")
    answer = await read_answer(reader)
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    assert orjson.loads(answer.body)["body"] == "half done!"
    assert await closed(reader)
    writer.close()  # the lingering connection closes with the client's side
    await asyncio.wait_for(closing, timeout=5)


async def test_a_client_that_closed_its_side_is_closed_after_its_answer(
    served: Served,
) -> None:
    # Lingering waits for the client's end of the connection; one that has already ended it
    # must not hold the connection open for the whole linger (the clock does not move here).
    client = await served.open()
    reader, writer = client.reader, client.writer
    writer.write(post("/hold", b"x"))
    writer.write_eof()
    await until(lambda: client.eof_seen, "the server to see the client's EOF")
    assert not client.closing()  # an answer is owed: kept open for it
    served.app.held[0].set_result(Response(202, b"{}"))
    answer = await read_answer(reader)
    assert (answer.status, answer.headers["connection"]) == (202, "close")
    assert await closed(reader)
    assert client.closing()
    await until(lambda: not served.server.connections, "the connection to close")
    writer.close()


@pytest.mark.parametrize("path", ["/wrong", "/bad-header"])
async def test_an_answer_that_cannot_be_sent_is_a_500_and_the_connection_goes_on(
    served: Served, path: str
) -> None:
    reader, writer = await served.connect()
    writer.write(post(path, b"") + post("/echo", b"after"))
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (500, "internal_error")
    assert orjson.loads((await read_answer(reader)).body)["body"] == "after"
    writer.close()


async def test_a_body_of_many_gzip_members_is_refused_without_decoding_them_all(
    served: Served,
) -> None:
    # Each gzip member costs a pass over the rest of the body: thousands of empty ones would
    # hold the event loop for seconds. Past MAX_GZIP_MEMBERS the body is refused.
    reader, writer = await served.connect()
    few = gzip.compress(b"ab") + gzip.compress(b"cd")
    many = gzip.compress(b"") * (MAX_GZIP_MEMBERS + 1)
    for body in (few, many):
        writer.write(post("/echo", body, "Content-Encoding: gzip"))
    answers = [await read_answer(reader), await read_answer(reader)]
    assert orjson.loads(answers[0].body)["body"] == "abcd"
    assert (answers[1].status, orjson.loads(answers[1].body)["code"]) == (400, "invalid_encoding")
    writer.close()


async def test_queued_compressed_bodies_are_decoded_only_at_their_turn(served: Served) -> None:
    # Small on the wire, each up to the limit decoded: a queue of them decoded on arrival
    # would hold that much memory per connection.
    client = await served.open()
    reader, writer, connection = client.reader, client.writer, client.connection
    bomb = gzip.compress(b"0" * 4000)  # LIMIT is 4096
    client.send(
        post("/hold", b"first")
        + b"".join(post("/echo", bomb, "Content-Encoding: gzip") for _ in range(5))
    )
    await client.delivered()
    waiting = [request.body for request, _ in connection._queue]
    assert waiting == [bomb] * 5  # still as sent
    served.app.held[0].set_result(Response(200, b"{}"))
    answers = [await read_answer(reader) for _ in range(6)]
    assert [len(orjson.loads(a.body)["body"]) for a in answers[1:]] == [4000] * 5
    writer.close()


async def test_100_continue_comes_after_the_requests_before_and_starts_the_body_clock(
    served: Served,
) -> None:
    # The 100 Continue of a request behind a waiting one comes once that one is answered (read
    # in order here: the 201, then the 100). The sender rightly waits for it meanwhile, so its
    # body_timeout_s runs from the 100, not from its head.
    client = await served.open()
    reader, writer = client.reader, client.writer
    client.send(
        post("/hold", b"first")
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n"
    )
    await client.delivered()
    served.clock.advance(2 * BODY_TIMEOUT_S)  # not asked for its body yet: no 408
    served.app.held[0].set_result(Response(201, b"{}"))
    assert (await read_answer(reader)).status == 201
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    served.clock.advance(SWEEP_S)  # within body_timeout_s of the 100
    writer.write(b"second")
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["body"]) == (200, "second")
    writer.close()


async def test_a_content_length_of_thousands_of_digits_is_a_clear_answer(served: Served) -> None:
    # Python's int() refuses strings of over 4300 digits; llhttp accepts leading zeros.
    reader, writer = await served.connect()
    zeros = "0" * 5000
    writer.write(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {zeros}2\r\n\r\nok".encode())
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["body"]) == (200, "ok")
    huge = "1" + "0" * 18  # 19 digits: still a 64-bit length to llhttp
    writer.write(f"POST /echo HTTP/1.1\r\nContent-Length: {zeros}{huge}\r\n\r\n".encode())
    answer = await read_answer(reader)
    assert (answer.status, orjson.loads(answer.body)["code"]) == (413, "payload_too_large")
    writer.close()


async def test_empty_lines_do_not_keep_an_idle_connection_open(served: Served) -> None:
    # llhttp skips empty lines between requests without beginning one: they are not activity.
    client = await served.open()
    closed_after_s = None
    for sweeps in range(1, 5):  # one empty line per sweep; idle_timeout_s is two sweeps
        client.send(b"\r\n")
        await client.delivered()
        served.clock.advance(SWEEP_S)
        if client.closing():
            closed_after_s = sweeps * SWEEP_S
            break
    assert closed_after_s == IDLE_TIMEOUT_S + SWEEP_S  # the first sweep past the limit
    assert await closed(client.reader)
    client.writer.close()
