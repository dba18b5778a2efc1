"""Instructions per request of a gateway benchmark server, under valgrind's callgrind.

Why: on this shared 2-core machine req/s move ±30 % between wrk rounds and CPU per request
±10-15 %; the instruction count of a fixed number of requests moves under ±1 % whatever else
runs, so it shows a change of a few percent that wrk cannot. User space only: the kernel's
time in system calls is not in it (the wrk rounds of run.py measure that).

How: the server (one of run.py's targets a-d) runs under ``valgrind --tool=callgrind``; a
client outside valgrind (this process: 64 keep-alive connections, each sending its next
request when the previous one is answered, as wrk does) sends ``--warmup`` requests, the
counters are zeroed (``callgrind_control -z``), ``--requests`` more are sent, and the counters
dumped (``callgrind_control -d``): the dump's total over the requests is the figure. Every
answer must be 2xx, or the run fails. ``--keep DIR`` keeps the dumps for ``callgrind_annotate``.
Target ``c0`` is the gateway as of ``--code-from REV``; list targets twice to interleave them
(``c0 c c0 c``).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python bench/gateway/instructions.py c a
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import run as gateway_bench  # noqa: E402  (bench/gateway/run.py: its config and requests)
from servers import code_tree  # noqa: E402  (bench/http_servers/servers.py, via run.py's path)

_TOTALS = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


def build_requests(host: str, count: int, secret: str, *, signed: bool) -> list[bytes]:
    """``count`` distinct raw POSTs (ids and partition keys), as run.py's wrk script sends."""
    raw: list[bytes] = []
    for body, headers in gateway_bench.webhook_requests(count, secret if signed else None):
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
        raw.append(
            f"POST /webhooks/bench HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return raw


async def _connection(
    host: str, port: int, requests: list[bytes], counter: list[int], total: int
) -> list[int]:
    """One keep-alive connection sending back to back until ``total`` requests were sent."""
    reader, writer = await asyncio.open_connection(host, port)
    statuses: list[int] = []
    try:
        while counter[0] < total:
            index = counter[0]
            counter[0] += 1
            writer.write(requests[index % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(int(head[9:12]))
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
    finally:
        writer.close()
    return statuses


async def drive(url: str, requests: list[bytes], total: int, connections: int) -> int:
    """Send ``total`` requests over ``connections``; the number answered 2xx."""
    host, port = url.removeprefix("http://").split(":")
    counter = [0]
    results = await asyncio.gather(
        *(_connection(host, int(port), requests, counter, total) for _ in range(connections))
    )
    statuses = [s for per in results for s in per]
    bad = [s for s in statuses if not 200 <= s < 300]
    if bad:
        raise SystemExit(f"instructions: {len(bad)} answers not 2xx, e.g. {bad[:5]}")
    return len(statuses)


def total_instructions(dump: Path) -> int:
    found = _TOTALS.findall(dump.read_bytes())
    if not found:
        raise SystemExit(f"instructions: no totals in {dump}")
    return int(found[-1])


def measure(
    target: str, args: argparse.Namespace, work: Path, env: dict[str, str], bootstrap: str
) -> dict[str, float]:
    out = work / f"callgrind.{target}"
    if args.profile:  # cProfile instead of callgrind (profiled.py), the same requests
        wrapper = [sys.executable, str(HERE / "profiled.py")]
        env = {**env, "PROFILE_OUT": str(args.profile / f"{target}.prof")}
        args.profile.mkdir(parents=True, exist_ok=True)
    else:
        wrapper = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}.%p",
            "--dump-instr=no",
            "--compress-strings=no",
        ]
    bare = [str(HERE / "bare.py")]
    commands = {
        "a": [*bare, "--mode", "bare"],
        "b": [*bare, "--mode", "kafka", "--bootstrap", bootstrap, "--topic", args.naive_topic],
        "c": [
            *(["-m"] if not args.profile else []),
            "streams.cli.main",
            "gateway",
            "-c",
            str(work / "bench.yaml"),
            "-l",
            "warn",
        ],
        "d": [*bare, "--mode", "http1"],
    }
    commands["c0"] = commands["c"]
    command = commands[target]
    if not args.profile:
        command = [sys.executable, *command]
    log = work / f"{target}.{len(list(work.glob('*.log')))}.log"
    code = args.code if target == "c0" else None
    server = gateway_bench.start(target, [*wrapper, *command], env, log, code)
    pid = server.process.pid
    try:
        requests = build_requests(
            server.url.removeprefix("http://"), 64, args.secret, signed=target in ("c", "c0")
        )
        asyncio.run(drive(server.url, requests, args.warmup, args.connections))
        if args.profile:
            server.process.send_signal(signal.SIGUSR1)
            answered = asyncio.run(drive(server.url, requests, args.requests, args.connections))
            server.process.send_signal(signal.SIGUSR2)
            while "profile written" not in log.read_text():
                time.sleep(0.1)
            return {"requests": answered}
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        answered = asyncio.run(drive(server.url, requests, args.requests, args.connections))
        before = set(work.glob(f"callgrind.{target}.{pid}*"))
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        dumps = sorted(set(work.glob(f"callgrind.{target}.{pid}*")) - before)
        instructions = total_instructions(dumps[-1])
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dumps[-1], args.keep / f"callgrind.{target}.{pid}.out")
    finally:
        server.stop()
    return {
        "requests": answered,
        "instructions": instructions,
        "kir_per_request": round(instructions / answered / 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "targets", nargs="*", default=["a", "c"], choices=["a", "b", "c", "c0", "d"]
    )
    parser.add_argument("--code-from", help="REV: the gateway measured as target c0")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here")
    parser.add_argument(
        "--profile", type=Path, help="cProfile (profiled.py) instead; write <target>.prof here"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("instructions: set KAFKA_BOOTSTRAP_SERVERS")
    if not shutil.which("valgrind"):
        raise SystemExit("instructions: valgrind is not installed (apt-get install valgrind)")
    args.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_WEBHOOK_SECRET": args.secret, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the config names the broker
    if "c0" in args.targets and not args.code_from:
        raise SystemExit("instructions: target c0 needs --code-from REV")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hookstream-callgrind-") as tmp:
        work = Path(tmp)
        args.code = code_tree(args.code_from, work)[0] if args.code_from else None
        (work / "bench.yaml").write_text(gateway_bench.bench_config(bootstrap, prefix, 0))
        args.naive_topic = f"{prefix}-naive"
        if "b" in args.targets:
            args.naive_topic = asyncio.run(
                gateway_bench.create_topic(bootstrap, args.naive_topic, 8)
            )
        for target in args.targets:
            results.setdefault(target, []).append(measure(target, args, work, env, bootstrap))
            print(f"instructions: ({target}) {results[target][-1]}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
