"""A Python load generator, run in its own process: open loop at a fixed rate, or closed loop.

``--rate R``: requests are scheduled at ``start + i/R`` whatever happened to earlier ones, and
each latency is measured from its *scheduled* time, so a stalled server shows up in the
percentiles instead of silently slowing the generator (no coordinated omission). Without
``--rate``: ``--connections`` workers send back to back (the fallback when wrk is missing).
Prints one JSON object: sent, answered by status, achieved rate, p50/p90/p99/max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> dict[str, object]:
    requests = [(body.encode(), headers) for body, headers in json.loads(args.requests_json)]
    statuses: Counter[str] = Counter()
    latencies_s: list[float] = []
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        counter = 0

        async def one(scheduled: float) -> None:
            nonlocal counter
            body, headers = requests[counter % len(requests)]
            counter += 1
            try:
                async with session.post(args.url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            latencies_s.append(time.perf_counter() - scheduled)

        started = time.perf_counter()
        if args.rate:
            total = int(args.rate * args.duration_s)
            tasks: set[asyncio.Task[None]] = set()
            for i in range(total):
                scheduled = started + i / args.rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)
        else:
            deadline = started + args.duration_s

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one(time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(args.connections)))
        elapsed_s = time.perf_counter() - started
    latencies_s.sort()
    return {
        "sent": len(latencies_s),
        "statuses": dict(statuses),
        "duration_s": round(elapsed_s, 3),
        "req_per_s": round(len(latencies_s) / elapsed_s, 1),
        "target_rate_per_s": args.rate,
        "p50_ms": round(percentile(latencies_s, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies_s, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 3),
        "max_ms": round((latencies_s[-1] if latencies_s else float("nan")) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True, help="JSON file: [[body, headers], ...]")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (open loop)")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    args.requests_json = Path(args.requests).read_text()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
