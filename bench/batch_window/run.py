"""How long a batcher is exposed to submitting a job twice, per job, before and after the
creation deadline (issue 15's last batch leftover; docs/ai.md, "One batcher at a time").

A batcher fenced by a successor while it is paused (SIGSTOP, a frozen VM) between a job's
journaled intent and the job's creation could create the job after the successor looked for
it by listing and submitted its requests again. A pause while the process waits on the
network is harmless (aiohttp's timeout fires first on resume, and the successor lists only
after a whole submission's timeouts), so the exposure is the CPU-bound time between the
intent and the create request's last byte handed to the kernel:

- before the deadline: from the intent to the upload's request headers (building the JSONL
  and the multipart body; OpenAI), then from the upload's answer to the create request's last
  body chunk; Anthropic: from the intent to the create's last chunk (building its body);
- after it: from the deadline check (``agents.ai.batch._Base._in_time``) to the create
  request's last chunk: a pause must begin inside it, and last longer than the successor's
  settle (two request timeouts, 180 s by default), to create a job twice.

Measured through aiohttp's trace hooks against the AI simulator (loopback), per provider
kind and job size, R submissions each; medians and maxima in milliseconds.

Writes bench/results/batch_window.json and .md.
Usage: python bench/batch_window/run.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import agents.ai.batch as batch_module  # noqa: E402
from agents.ai.provider import ChatRequest  # noqa: E402
from schemas.config_ai import ProviderConfig  # noqa: E402
from tests.support.sims import running_ai_sim  # noqa: E402

SIZES = (1, 1_000, 10_000)
Kind = Literal["openai", "anthropic"]


class _Marks:
    """perf_counter() stamps of one submission's requests, by path and event."""

    def __init__(self) -> None:
        self.stamps: dict[tuple[str, str], float] = {}

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def headers_sent(_s: Any, _c: Any, params: Any) -> None:
            self.stamps.setdefault((params.url.path, "headers"), time.perf_counter())

        async def chunk_sent(_s: Any, context: Any, params: Any) -> None:
            self.stamps[(context.trace_request_ctx["path"], "last_chunk")] = time.perf_counter()

        async def start(_s: Any, context: Any, params: Any) -> None:
            context.trace_request_ctx = {"path": params.url.path}

        async def end(_s: Any, _c: Any, params: Any) -> None:
            self.stamps[(params.url.path, "answered")] = time.perf_counter()

        config.on_request_start.append(start)
        config.on_request_headers_sent.append(headers_sent)
        config.on_request_chunk_sent.append(chunk_sent)
        config.on_request_end.append(end)
        return config


def _lines(count: int) -> list[tuple[str, ChatRequest]]:
    return [
        (
            f"0_{n}",
            ChatRequest(
                model="sim-1",
                system="You triage customer feedback. Answer with JSON only.",
                prompt=f"Ticket {n}: the export to CSV fails since the last update, again.",
                schema_name="triage",
                schema={"type": "object", "properties": {"summary": {"type": "string"}}},
                temperature=0.0,
                max_tokens=128,
            ),
        )
        for n in range(count)
    ]


async def _one(kind: Kind, base_url: str, lines: list[tuple[str, ChatRequest]]) -> dict[str, float]:
    marks = _Marks()
    checked: list[float] = []
    original = batch_module._Base._in_time

    def stamped(self: Any, label: str, intent_at: Any) -> None:
        original(self, label, intent_at)
        checked.append(time.perf_counter())

    batch_module._Base._in_time = stamped  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession(trace_configs=[marks.trace()]) as session:
            provider = ProviderConfig(name=kind, kind=kind, base_url=base_url, model="sim-1")
            api = batch_module.batch_api_for(provider, session)
            intent = time.perf_counter()
            await api.submit(lines, f"window-{kind}-{len(lines)}", (time.monotonic(), time.time()))
    finally:
        batch_module._Base._in_time = original  # type: ignore[method-assign]
    stamps = marks.stamps
    if kind == "openai":
        create = "/v1/batches"
        before = (stamps[("/v1/files", "headers")] - intent) + (
            stamps[(create, "last_chunk")] - stamps[("/v1/files", "answered")]
        )
    else:
        create = "/v1/messages/batches"
        before = stamps[(create, "last_chunk")] - intent
    after = stamps[(create, "last_chunk")] - checked[0]
    return {"before_ms": before * 1000, "after_ms": after * 1000}


async def main(repeat: int) -> dict[str, Any]:
    rows = []
    async with running_ai_sim() as ai:
        for kind in ("openai", "anthropic"):
            for size in SIZES:
                lines = _lines(size)
                runs = [await _one(kind, ai.base_url, lines) for _ in range(repeat)]
                rows.append(
                    {
                        "kind": kind,
                        "lines": size,
                        "runs": runs,
                        **{
                            f"{key}_{stat}": round(fn([r[key] for r in runs]), 3)
                            for key in ("before_ms", "after_ms")
                            for stat, fn in (("median", statistics.median), ("max", max))
                        },
                    }
                )
    return {"repeat": repeat, "rows": rows}


def write(run: dict[str, Any]) -> str:
    out = ROOT / "bench" / "results"
    (out / "batch_window.json").write_text(json.dumps(run, indent=2) + "\n")
    lines = [
        "# batch_window: a job's exposure to being created twice by a paused, fenced batcher",
        "",
        f"`python bench/batch_window/run.py --repeat {run['repeat']}`: per submission, the "
        "CPU-bound time between the job's intent and the create request's last byte, "
        "before the creation deadline, and after it (from the deadline check). Milliseconds; "
        "the AI simulator on loopback.",
        "",
        "| kind | lines | before: median | before: max | after: median | after: max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in run["rows"]:
        lines.append(
            f"| {row['kind']} | {row['lines']:,} | {row['before_ms_median']:.2f} | "
            f"{row['before_ms_max']:.2f} | {row['after_ms_median']:.3f} | "
            f"{row['after_ms_max']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "batch_window.md").write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(namespace=SimpleNamespace())
    print(write(asyncio.run(main(args.repeat))))
