"""Benchmark: hookstream's tokens-per-minute budget against a provider that enforces the limit.

The AI simulator enforces T tokens per minute like a provider (a sliding minute; prompt +
max_tokens counted at admission, settled to the usage once answered; 429 with Retry-After
and x-ratelimit-* headers past it: streams/dev/ai_sim_limits.py) and answers in 400 ms ±
200 ms. The flow's provider has ``budget.tokens_per_minute: T``, the same figure a user copies
from the provider's console. C callers each run the AI stage's task (``AITask.run``: budget,
breaker, client, retries, validation; everything of the stage but Kafka) on one event after
another for M minutes; messages are 80 to 1,600 characters, so calls vary from ~70 to ~450
tokens and each reserves ``max_tokens`` (512) more until answered.

Two figures, both from the simulator's own counts: the share of calls it answered 429, and
the tokens it counted per minute over the limit (whole run, and from the second minute on,
once the start-up has passed). Targets: under 1 % and at least 90 %.

Writes bench/results/ai_budget.md and bench/results/ai_budget.json.
Usage: python bench/ai_budget/run.py [--minutes 4] [--tpm 60000] [--callers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from agents.ai.task import AITask, ProviderRuntime  # noqa: E402
from schemas.config_ai import BudgetConfig  # noqa: E402
from schemas.config_loader import load_config  # noqa: E402
from schemas.errors import HookstreamError  # noqa: E402
from schemas.events import CloudEvent, EnrichedEvent  # noqa: E402
from tests.support.sims import running_ai_sim  # noqa: E402
from tests.support.stack import EXAMPLE_CONFIG, SECRETS  # noqa: E402

LATENCY_MS, JITTER_MS = 400, 200
FLOW = "feedback-triage"
# The words of the simulated messages (keywords of its analysis among them).
TEXT = (
    "the export is broken again and I want a refund for this month invoice login fails "
    "since the update thanks for the quick help great product but the dashboard is slow "
    "please add a dark mode my card was charged twice cancel my subscription"
)
WORDS = TEXT.split()


def message(rng: random.Random) -> str:
    length = rng.randint(80, 1600)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words).capitalize() + "."


def event(rng: random.Random) -> EnrichedEvent:
    customer = f"cus-{rng.randrange(1000)}"
    return EnrichedEvent(
        flow=FLOW,
        event=CloudEvent(
            id=uuid.uuid4().hex,
            source="helpdesk",
            type="ticket.created",
            time=datetime.now(UTC),
            data={"customer_id": customer, "ticket_id": "T1", "message": message(rng)},
            partitionkey=customer,
            traceid=uuid.uuid4().hex,
        ),
    )


async def drive(base_url: str, tpm: int, callers: int, minutes: float) -> dict[str, Any]:
    """C callers for M minutes; what hookstream saw (answers, failures, waits)."""
    env = {**SECRETS, "HOOKSTREAM_AI_BASE_URL": base_url, "KAFKA_BOOTSTRAP_SERVERS": "unused:1"}
    config = load_config(EXAMPLE_CONFIG, env=env)
    provider = config.providers[0].model_copy(
        update={"budget": BudgetConfig(tokens_per_minute=tpm)}
    )
    flow = next(f for f in config.flows if f.name == FLOW)
    # No answer cache: every event is a call. Retries: enough that a 429 never ends a task.
    flow = flow.model_copy(
        update={"ai": flow.ai.model_copy(update={"cache": False, "max_attempts": 10})}
    )
    seen = {"answered": 0, "failed": 0, "attempts": 0, "tokens": 0}
    deadline = time.monotonic() + minutes * 60
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        runtime = ProviderRuntime.build(provider, session)
        task = AITask(flow, {provider.name: runtime}, config.worker)

        async def caller(index: int) -> None:
            rng = random.Random(index)  # noqa: S311 - benchmark data, not crypto
            while time.monotonic() < deadline:
                try:
                    outcome = await task.run(event(rng))
                except HookstreamError:
                    seen["failed"] += 1
                    continue
                seen["answered"] += 1
                seen["attempts"] += outcome.result.attempts
                seen["tokens"] += outcome.result.usage.total_tokens

        await asyncio.gather(*(caller(i) for i in range(callers)))
    return seen


async def sample(sim: Any, at_s: float, started: float) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
    stats = await sim.stats()
    return {"at_s": round(time.monotonic() - started, 1), **stats["rate_limit"]}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--tpm", type=int, default=60_000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--out", default="ai_budget", help="results file name (without suffix)")
    args = parser.parse_args()
    async with running_ai_sim(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS) as sim:
        await sim.configure(tokens_per_minute=args.tpm)
        started = time.monotonic()
        seen_task = asyncio.create_task(drive(sim.base_url, args.tpm, args.callers, args.minutes))
        # The simulator's counts after the first minute and at the end of the run (calls
        # still in flight then settle later and are left out: they belong to the next minute).
        first = await sample(sim, 60.0, started)
        last = await sample(sim, args.minutes * 60, started)
        seen = await seen_task
        stats = await sim.stats()
    requests = sum(int(n) for n in stats["by_status"].values())
    limited = stats["rate_limit"]["limited"]
    whole_min = last["at_s"] / 60
    steady_min = (last["at_s"] - first["at_s"]) / 60
    results: dict[str, Any] = {
        "setup": {
            "tokens_per_minute": args.tpm,
            "budget_tokens_per_minute": args.tpm,
            "minutes": args.minutes,
            "callers": args.callers,
            "latency_ms": LATENCY_MS,
            "jitter_ms": JITTER_MS,
            "cpus": os.cpu_count(),
        },
        "calls": requests,
        "answered_429": limited,
        "share_429": round(limited / max(requests, 1), 4),
        "tokens_counted": last["tokens_counted"],
        "use_of_limit": round(last["tokens_counted"] / (args.tpm * whole_min), 3),
        "use_of_limit_after_first_minute": round(
            (last["tokens_counted"] - first["tokens_counted"]) / (args.tpm * steady_min), 3
        ),
        "hookstream": seen,
        "samples": [first, last],
    }
    results["met"] = results["share_429"] < 0.01 and results["use_of_limit"] >= 0.9
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{args.out}.md").write_text(render(results))
    print((out / f"{args.out}.md").read_text())
    return 0


def render(r: dict[str, Any]) -> str:
    s, h = r["setup"], r["hookstream"]
    lines = [
        "# Token budget benchmark",
        "",
        f"The AI simulator enforces {s['tokens_per_minute']:,} tokens per minute (a sliding "
        "minute; prompt + max_tokens counted at admission, settled to the usage when "
        "answered; 429 with Retry-After and x-ratelimit-* headers past it) and answers in "
        f"{s['latency_ms']} ms ± {s['jitter_ms']} ms. The provider's budget is "
        f"tokens_per_minute: {s['budget_tokens_per_minute']:,}. {s['callers']} callers run "
        f"the AI stage's task (AITask.run) back to back for {s['minutes']:g} minutes on "
        "messages of 80-1,600 characters (max_tokens 512, no answer cache); "
        f"{s['cpus']} CPUs shared with the simulator. Produced by `make bench-ai` "
        "(bench/ai_budget/run.py); both figures are the simulator's own counts.",
        "",
        "| calls | answered 429 | 429 share | tokens / minute / limit | "
        "same, after the first minute |",
        "|---:|---:|---:|---:|---:|",
        f"| {r['calls']:,} | {r['answered_429']:,} | {100 * r['share_429']:.2f} % | "
        f"{100 * r['use_of_limit']:.1f} % | "
        f"{100 * r['use_of_limit_after_first_minute']:.1f} % |",
        "",
        f"- hookstream: {h['answered']:,} answers in {h['attempts']:,} attempts, "
        f"{h['failed']:,} failed tasks",
        f"- targets (429 share < 1 %, use ≥ 90 % of the limit): met: {r['met']}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
