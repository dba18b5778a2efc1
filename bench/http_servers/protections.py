"""What each server of apps.py does when a client attacks it, from raw sockets on 127.0.0.1.

For the decision record on hookstream's own HTTP/1.1 layer: which protections it has that
aiohttp, uvicorn and granian lack, as measured outcomes rather than claims. Every server runs
with its defaults (apps.py says which settings those are); where a behaviour can be changed by
a setting, the results name it.

Attacks (each bounded in time and size; each against a freshly started server, so that one
attack's memory does not hide the next one's):

- slowloris: a request head that never ends, one more header line every 2 s; and the same
  head sent once, then silence. Is the connection closed, after how long (at most ``--cap-s``)?
- half body: Content-Length 1000, 500 bytes sent, then silence: 408, a close, or held?
- endless header value: one header value streamed without end (up to 64 MiB or 30 s): the
  answer, after how many bytes, and the server's memory growth (RSS, sampled every 50 ms).
- pipelined flood: 10,000 (and 100,000) pipelined POSTs written while never reading an
  answer: how much the client could write, the server's memory growth.
- gzip bomb: a body of 512 MiB of zeros gzipped (~0.5 MB) with Content-Encoding: gzip: the
  answer and the memory growth. An ASGI/RSGI server hands the app the bytes as sent; decoding
  (and limiting) a Content-Encoding is the app's job there.
- a Content-Length of 5,000 digits; and 200 and 10,000 header lines.

After each attack a normal request must still be answered: the results say whether it was.
Writes the "protections" part of bench/results/http_servers.json and re-renders
http_servers.md. ``make bench-http`` runs it after run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import select
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import servers  # noqa: E402

BODY = json.dumps({"type": "ticket.created", "customer_id": "cus_0001", "message": "x" * 180})
TRICKLE_EVERY_S = 2.0
Outcome = dict[str, Any]


# Reading what the server does


def _status(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1."):
        with contextlib.suppress(ValueError, IndexError):
            return int(data.split(b" ", 2)[1])
    return None


def wait_answer(sock: socket.socket, timeout_s: float) -> Outcome:
    """The server's first answer or its close, within ``timeout_s``: status, how long."""
    started = time.monotonic()
    data = b""
    while True:
        left = timeout_s - (time.monotonic() - started)
        if left <= 0:
            return {"status": _status(data), "closed": False, "after_s": None}
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return _ended(data, started, reset=True)
        if not chunk:
            return _ended(data, started, reset=False)
        data += chunk
        if b"\r\n\r\n" in data:
            return {
                "status": _status(data),
                "closed": False,
                "after_s": round(time.monotonic() - started, 2),
            }


def _ended(data: bytes, started: float, *, reset: bool) -> Outcome:
    return {
        "status": _status(data),
        "closed": "reset" if reset else "fin",
        "after_s": round(time.monotonic() - started, 2),
    }


class RssPeak:
    """Samples a server's resident memory every 50 ms while in a ``with`` block, and takes
    the CPU time it spent meanwhile."""

    def __init__(self, server: servers.Server) -> None:
        self.server = server
        self.before = server.rss_bytes()
        self.peak = self.before
        self.cpu_before_s = server.cpu_s()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.server.rss_bytes())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss_bytes())
        self.cpu_s = self.server.cpu_s() - self.cpu_before_s

    def figures(self) -> Outcome:
        return {
            "rss_before_mib": round(self.before / 2**20, 1),
            "rss_peak_mib": round(self.peak / 2**20, 1),
            "rss_growth_mib": round((self.peak - self.before) / 2**20, 1),
            "server_cpu_s": round(self.cpu_s, 2),
        }


def normal_request(server: servers.Server) -> Outcome:
    """A plain POST afterwards: is the server still answering, how fast?"""
    if not server.alive():
        return {"status": None, "error": f"server exited ({server.process.returncode})"}
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", "/webhooks/bench", BODY, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return {"status": response.status, "ms": round((time.monotonic() - started) * 1000, 1)}
    except OSError as exc:
        return {"status": None, "error": type(exc).__name__}
    finally:
        connection.close()


def connect(server: servers.Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


HEAD = b"POST /webhooks/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


# The attacks


def slowloris(server: servers.Server, cap_s: float, *, trickle: bool) -> Outcome:
    """A head that never ends: a header line every 2 s (``trickle``) or nothing after it."""
    with connect(server) as sock:
        sock.sendall(HEAD)
        started = time.monotonic()
        sent_lines = 0
        while (elapsed := time.monotonic() - started) < cap_s:
            next_s = (sent_lines + 1) * TRICKLE_EVERY_S if trickle else cap_s
            outcome = wait_answer(sock, min(next_s, cap_s) - elapsed)
            if outcome["closed"] or outcome["status"]:
                outcome["after_s"] = round(time.monotonic() - started, 2)
                return {**outcome, "held_s": None, "lines_sent": sent_lines}
            if trickle and time.monotonic() - started < cap_s:
                sent_lines += 1
                try:
                    sock.sendall(b"X-Slow-%d: 1\r\n" % sent_lines)
                except OSError:
                    return {
                        "status": None,
                        "closed": "on send",
                        "after_s": round(time.monotonic() - started, 2),
                        "held_s": None,
                        "lines_sent": sent_lines,
                    }
        return {"status": None, "closed": False, "after_s": None, "held_s": cap_s,
                "lines_sent": sent_lines}  # fmt: skip


def half_body(server: servers.Server, cap_s: float) -> Outcome:
    """Content-Length 1000, 500 bytes of body, then silence."""
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n" + b"x" * 500)
        outcome = wait_answer(sock, cap_s)
    outcome["held_s"] = None if outcome["closed"] or outcome["status"] else cap_s
    return outcome


def _stream(
    sock: socket.socket, chunks: Callable[[], bytes | None], limit_s: float, *, read: bool
) -> tuple[int, Outcome | None, float]:
    """Write ``chunks()`` without blocking until it returns None, the server answers or
    closes, or ``limit_s`` passes: (bytes sent, the server's end, seconds). With ``read``
    False the answers are never read (the client that does not read), so only a failing
    send shows the server's end."""
    sock.setblocking(False)
    started = time.monotonic()
    sent = 0
    pending = memoryview(b"")  # a view: slicing what is left copies nothing
    data = b""
    while time.monotonic() - started < limit_s:
        if not pending:
            pending = memoryview(chunks() or b"")
            if not pending:
                break
        readable, writable, _ = select.select([sock] if read else [], [sock], [], 0.2)
        if readable:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk or _status(data + chunk):
                data += chunk
                return sent, {"status": _status(data), "closed": not chunk}, _since(started)
            data += chunk
        if writable:
            try:
                n = sock.send(pending)
            except OSError:
                return sent, {"status": _status(data), "closed": "on send"}, _since(started)
            sent += n
            pending = pending[n:]
    return sent, None, _since(started)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def endless_header(server: servers.Server, max_bytes: int, limit_s: float) -> Outcome:
    """One header value, streamed in 64 KiB pieces without ever ending."""
    piece = b"a" * 65536
    budget = [max_bytes]

    def chunks() -> bytes | None:
        if budget[0] <= 0:
            return None
        budget[0] -= len(piece)
        return piece

    with RssPeak(server) as rss, connect(server) as sock:
        sock.sendall(HEAD + b"X-Endless: ")
        sent, end, seconds = _stream(sock, chunks, limit_s, read=True)
        if end is None:  # everything sent, or out of time: did the server say anything?
            end = wait_answer(sock, 2.0)
    return {**end, "value_bytes_sent": sent, "seconds": seconds, **rss.figures()}


def pipelined_flood(server: servers.Server, count: int, watch_s: float) -> Outcome:
    """``count`` pipelined POSTs, never reading an answer; memory watched for ``watch_s``."""
    body = BODY.encode()
    one = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    total = one * count
    given = [False]

    def chunks() -> bytes | None:
        if given[0]:
            return None
        given[0] = True
        return total

    with RssPeak(server) as rss, connect(server) as sock:
        sent, end, seconds = _stream(sock, chunks, watch_s, read=False)
        if end is None and seconds < watch_s:  # all sent: keep not reading for the rest
            time.sleep(watch_s - seconds)
    return {
        "requests": count,
        "bytes_total": len(total),
        "bytes_written": sent,  # into the socket: the kernel's buffers on both sides count
        "requests_written": sent // len(one),
        "server_end": end,
        **rss.figures(),
    }


def gzip_bomb_body(decoded_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded_bytes >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


def gzip_bomb(server: servers.Server, bomb: bytes, decoded_bytes: int, limit_s: float) -> Outcome:
    head = (
        HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    )  # fmt: skip
    with RssPeak(server) as rss, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head + bomb)
        end = wait_answer(sock, limit_s)
        end["after_s"] = _since(started)
    return {
        **end,
        "body_bytes": len(bomb),
        "decoded_bytes": decoded_bytes,
        **rss.figures(),
    }


def one_head(server: servers.Server, head: bytes, limit_s: float = 10.0) -> Outcome:
    """Send a head (and a small body) as one write; what comes back."""
    with RssPeak(server) as rss, connect(server) as sock:
        started = time.monotonic()
        try:
            sock.sendall(head)
        except OSError as exc:
            return {"status": None, "closed": f"on send ({type(exc).__name__})"}
        end = wait_answer(sock, limit_s)
        end["after_s"] = _since(started)
    return {**end, "head_bytes": len(head), **rss.figures()}


def many_headers(count: int) -> bytes:
    lines = b"".join(b"X-H-%d: v\r\n" % i for i in range(count))
    return HEAD + lines + b"Content-Length: 2\r\n\r\n{}"


def long_content_length(digits: int) -> bytes:
    return HEAD + b"Content-Length: 1" + b"0" * (digits - 1) + b"\r\n\r\n{}"


# Running them


def on_fresh_server(
    name: str, work: Path, attack: Callable[[servers.Server], Outcome], code: Path | None
) -> Outcome:
    server = servers.start(name, work, code=code)
    try:
        warm = normal_request(server)  # the first request's allocations are not the attack's
        outcome = attack(server)
        outcome["normal_request_before"] = warm
        outcome["normal_request_after"] = normal_request(server)
        return outcome
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-s", type=float, default=100.0, help="slowloris/half-body cap")
    parser.add_argument("--servers", nargs="+", choices=servers.NAMES, default=list(servers.NAMES))
    parser.add_argument("--only", nargs="+", help="attacks to run (default: all)")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--code-from",
        metavar="REV",
        help="serve hookstream's layer as committed at REV (git), not from the work tree",
    )
    args = parser.parse_args()
    decoded = 512 * 2**20
    bomb = gzip_bomb_body(decoded)
    cap = args.cap_s
    timed: dict[str, Callable[[servers.Server], Outcome]] = {
        "slowloris_trickle": lambda s: slowloris(s, cap, trickle=True),
        "slowloris_silent": lambda s: slowloris(s, cap, trickle=False),
        "half_body": lambda s: half_body(s, cap),
    }
    sequential: dict[str, Callable[[servers.Server], Outcome]] = {
        "endless_header": lambda s: endless_header(s, 64 * 2**20, 30.0),
        "pipelined_flood": lambda s: pipelined_flood(s, 10_000, 10.0),
        # 35 MB: more than the kernel's buffers hold, so it shows who stops reading.
        "pipelined_flood_100000": lambda s: pipelined_flood(s, 100_000, 10.0),
        "gzip_bomb": lambda s: gzip_bomb(s, bomb, decoded, 30.0),
        "content_length_5000_digits": lambda s: one_head(s, long_content_length(5000)),
        "headers_200": lambda s: one_head(s, many_headers(200)),
        "headers_10000": lambda s: one_head(s, many_headers(10_000)),
    }
    if args.only:
        timed = {k: v for k, v in timed.items() if k in args.only}
        sequential = {k: v for k, v in sequential.items() if k in args.only}
    results: dict[str, dict[str, Outcome]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-attacks-") as tmp:
        work = Path(tmp)
        code, commit = servers.code_tree(args.code_from, work) if args.code_from else (None, None)
        # The waiting attacks run side by side (all servers, all three at once): they only wait.
        jobs = [(attack, name) for attack in timed for name in args.servers]
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            futures = {
                job: pool.submit(on_fresh_server, job[1], work, timed[job[0]], code) for job in jobs
            }
            for (attack, name), future in futures.items():
                results.setdefault(attack, {})[name] = future.result()
                print(f"attack {attack} on {name}: {results[attack][name]}", flush=True)
        for attack, run in sequential.items():
            for name in args.servers:
                results.setdefault(attack, {})[name] = on_fresh_server(name, work, run, code)
                print(f"attack {attack} on {name}: {results[attack][name]}", flush=True)
    protections = {
        "settings": {
            "cap_s": cap,
            "trickle_every_s": TRICKLE_EVERY_S,
            "gzip_bomb_body_bytes": len(bomb),
            "gzip_bomb_decoded_bytes": decoded,
            "wall_s": round(time.monotonic() - started, 1),
            "pinned": False,
            "hookstream_code": f"commit {commit}" if commit else "work tree",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "servers": {name: servers.LABELS[name] for name in args.servers},
        "results": results,
    }
    report.update(args.out, "protections", protections, merge=bool(args.only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
