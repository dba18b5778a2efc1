"""The two Faust agents hookstream's AI stage is compared with (run as their own process).

``naive``: one agent awaiting each model call in turn. ``concurrent``: the same agent with
Faust's ``concurrency=64``. Each writes ``{"key", "seq"}`` per event to the output topic, keyed
like the input, so the benchmark can count per-key order violations.

Usage: faust_baseline.py MODE BOOTSTRAP PREFIX ENRICHED_TOPIC OUTPUT_TOPIC AI_BASE_URL
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import faust
import orjson


def main() -> None:
    mode, bootstrap, prefix, source, output, base_url = sys.argv[1:7]
    app = faust.App(
        f"{prefix}-baseline-{mode}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=8,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        datadir=str(Path(tempfile.gettempdir()) / f"hookstream-bench-{prefix}-{mode}"),
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    src = app.topic(source, key_type=bytes, value_type=bytes, **raw)
    out = app.topic(output, key_type=bytes, value_type=bytes, **raw)
    sessions: list[aiohttp.ClientSession] = []

    async def agent(stream: Any) -> None:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)))
        session = sessions[0]
        async for event in stream.events():
            value = orjson.loads(event.value)
            data = value["event"]["data"]
            body = {
                "model": "sim-1",
                "messages": [{"role": "user", "content": data["message"]}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "triage", "schema": {"type": "object"}},
                },
            }
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                await response.read()
            seq = int(data["message"].split()[-1].rstrip("."))
            await out.send(
                key=event.key, value=orjson.dumps({"key": data["customer_id"], "seq": seq})
            )

    concurrency = 64 if mode == "concurrent" else 1
    app.agent(src, name=f"baseline.{mode}", concurrency=concurrency)(agent)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
