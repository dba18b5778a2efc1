"""Benchmark: the CPU one HTTP lookup's GET costs the worker, aiohttp's client against the wire
client (issue 16).

The CRM simulator (its own process) answers ``GET /customers/<id>``; this process makes the
lookups, ``--concurrency`` at once (the worker's ``max_concurrency`` 256), and its own CPU time
(``time.process_time``) per lookup is what is reported: the whole client side, URL to parsed
answer. ``aiohttp``: :func:`agents.outbound.http.request_json` on the shared session, what a
lookup used before session 13; ``wire``: :func:`agents.outbound.wire.send_checked` through a
:class:`~agents.outbound.wire.WireClient`, what it uses now. Both under a guard with
``allow_private`` (the simulator is on loopback), so the check before each request is the
same no-op for both. The two alternate, ``--rounds`` times; the medians are reported, and the
ratio of each round. On uvloop, the loop the worker runs on. Writes bench/results/<name>.json
and .md.

Usage: python bench/pipeline/lookup_client.py [--calls 20000] [--rounds 5] [--name lookup-client-13]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from agents.outbound.egress_guard import NetGuard  # noqa: E402
from agents.outbound.http import new_session, request_json  # noqa: E402
from agents.outbound.wire import WireClient, send_checked  # noqa: E402
from streams.cli.loops import run  # noqa: E402
from tests.support.sims import running_crm_sim  # noqa: E402

KEYS = 1000
GUARD = NetGuard(allow_private=True, stage="enrich")
WHAT = "lookup customer"
ANSWERED = frozenset(range(200, 300)) | {404}


async def cpu_per_call_us(
    call: Callable[[str], Awaitable[object]], base_url: str, calls: int, concurrency: int
) -> float:
    """This process's CPU time per call, ``concurrency`` calls in flight at a time."""
    urls = [f"{base_url}/customers/cus_{i % KEYS + 1:04d}" for i in range(calls)]
    queue = iter(urls)

    async def worker() -> None:
        for url in queue:
            await call(url)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def measure(calls: int, rounds: int, concurrency: int) -> dict[str, Any]:
    session = new_session()
    client = WireClient({}, what=WHAT, stage="enrich", connect_timeout_s=5.0)

    async def through_aiohttp(url: str) -> object:
        return await request_json(
            session,
            "GET",
            url,
            stage="enrich",
            what=WHAT,
            timeout_s=10,
            not_found_ok=True,
            guard=GUARD,
        )

    async def through_wire(url: str) -> object:
        return await send_checked(
            client,
            session,
            GUARD,
            "GET",
            url,
            None,
            timeout_s=10,
            headers={},
            ok_statuses=ANSWERED,
        )

    runs = {"aiohttp": through_aiohttp, "wire": through_wire}
    reps: list[dict[str, float]] = []
    try:
        async with running_crm_sim(seed_customers=KEYS) as crm:
            for call in runs.values():  # warm: connections open, code paths imported
                await cpu_per_call_us(call, crm.base_url, concurrency * 4, concurrency)
            for index in range(rounds):
                order = list(runs) if index % 2 == 0 else list(reversed(runs))
                rep = {
                    name: round(
                        await cpu_per_call_us(runs[name], crm.base_url, calls, concurrency), 1
                    )
                    for name in order
                }
                rep["wire_vs_aiohttp"] = round(rep["wire"] / rep["aiohttp"], 2)
                print(f"  round {index + 1}: {rep}", flush=True)
                reps.append(rep)
    finally:
        client.close()
        await session.close()
    median = {k: round(statistics.median(r[k] for r in reps), 2) for k in reps[0]}
    return {"median": median, "rounds": reps}


def render(report: dict[str, Any]) -> str:
    s, med = report["setup"], report["median"]
    ratios = ", ".join(str(r["wire_vs_aiohttp"]) for r in report["rounds"])
    return "\n".join(
        [
            "# An HTTP lookup's client side: aiohttp against the wire client",
            "",
            f"`bench/pipeline/lookup_client.py`: {s['calls']:,} GETs per client and round, "
            f"{s['concurrency']} at once, against the CRM simulator (its own process); "
            f"{s['rounds']} rounds, the clients alternating; medians. CPU is this process's "
            "(`time.process_time`) per GET, URL to parsed answer, on uvloop; "
            f"{s['cpus']} CPUs; Python {s['python']}.",
            "",
            "| client | CPU per lookup (µs) |",
            "|---|---:|",
            f"| aiohttp's (`request_json`, what a lookup used before) | {med['aiohttp']} |",
            f"| the wire client (`send_checked`, what a lookup uses now) | {med['wire']} |",
            "",
            f"wire / aiohttp: **{med['wire_vs_aiohttp']}x** (by round: {ratios})",
            "",
        ]
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--name", default="lookup-client-13")
    args = parser.parse_args()
    measured = await measure(args.calls, args.rounds, args.concurrency)
    report = {
        "setup": {
            "calls": args.calls,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        **measured,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main()))  # on uvloop, the worker's loop
