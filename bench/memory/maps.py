"""One memory measurement in a fresh process: a worker's durable map holding N entries.

``python bench/memory/maps.py MODE COUNT [TREE]`` prints one JSON line: the process's RSS
growth while the map was filled, bytes per entry, and the time of one lookup. The map is
filled through ``DurableMap._apply``, the path every entry takes when a worker loads the topic
and when its tail reads what any worker wrote (its own writes included), so what is measured is
what a worker holds after a restart or after a day of traffic. ``TREE`` is a source tree to
import hookstream from (the code before a change, checked out elsewhere); default this one.

Modes:
- ``dedupe``: the keys a worker writes per event (``seen/<source>/<id>`` in enrich,
  ``done/<flow>/<source>/<id>`` in the AI stage), value 1;
- ``cache``: AI answer-cache entries (sha256 hex key; provider, model, a three-field output,
  token usage);
- ``set``: baseline, a plain ``set`` of the dedupe keys (the least a dedupe can hold: the keys);
- ``dict_bytes``: baseline, a plain ``dict`` of the cache keys → each entry's JSON bytes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import time
import timeit
from pathlib import Path
from typing import Any

TREE = Path(sys.argv[3]).resolve() if len(sys.argv) > 3 else Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TREE))

import orjson  # noqa: E402

from agents.state.durable_map import DurableMap  # noqa: E402
from schemas.config import KafkaSettings  # noqa: E402

SENTIMENTS = ("positive", "neutral", "negative")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def dedupe_key(index: int) -> str:
    # A Standard Webhooks id is "msg_" and 27 characters; half the keys are enrich's, half
    # the AI stage's, as a worker writes them (one of each per event and flow).
    event_id = f"msg_{hashlib.md5(b'%d' % (index // 2)).hexdigest()[:27]}"  # noqa: S324
    if index % 2:
        return f"done/triage/helpdesk/{event_id}"
    return f"seen/helpdesk/{event_id}"


def cache_key(index: int) -> str:
    return hashlib.sha256(b"%d" % index).hexdigest()


def cache_value(index: int) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "output": {
            "sentiment": SENTIMENTS[index % 3],
            "priority": "high" if index % 2 else "low",
            "summary": f"Customer {index} reports the export broken since the last update.",
        },
        "usage": {"prompt_tokens": 180 + index % 40, "completion_tokens": 42, "total_tokens": 222},
    }


def as_read(value: Any) -> bytes:
    """JSON bytes of exactly their size, as aiokafka hands a record's value. (orjson's own
    result is shrunk from a larger buffer: kept, each costs ~4 KiB of RSS, not its size.)"""
    return bytes(memoryview(orjson.dumps(value)))


def main() -> int:
    mode, count = sys.argv[1], int(sys.argv[2])
    now = time.time()
    holder: Any
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    if mode in ("dedupe", "cache"):
        holder = DurableMap(
            KafkaSettings(), f"bench.{mode}", ttl_s=7 * 86400, cleanup_interval_s=60
        )
        for index in range(count):
            key = dedupe_key(index) if mode == "dedupe" else cache_key(index)
            value = 1 if mode == "dedupe" else cache_value(index)
            holder._apply(key.encode(), as_read({"written_at": now, "value": value}))
        probe = dedupe_key(count // 2) if mode == "dedupe" else cache_key(count // 2)
        assert holder.get(probe) is not None, "the map lost an entry"
        lookup = timeit.Timer(lambda: holder.get(probe), timer=time.process_time)
    elif mode == "set":
        holder = {dedupe_key(index) for index in range(count)}
        probe = dedupe_key(count // 2)
        lookup = timeit.Timer(lambda: probe in holder, timer=time.process_time)
    elif mode == "dict_bytes":
        holder = {cache_key(index): as_read(cache_value(index)) for index in range(count)}
        probe = cache_key(count // 2)
        lookup = timeit.Timer(lambda: holder.get(probe), timer=time.process_time)
    else:
        raise SystemExit(f"maps.py: unknown mode {mode!r}")
    fill_s = time.perf_counter() - started
    gc.collect()
    grown = rss_bytes() - before
    entries = len(holder)
    loops = 200_000
    lookup_us = min(lookup.repeat(3, loops)) / loops * 1e6
    apply_us = None
    if isinstance(holder, DurableMap):
        # What each record the tail reads costs past aiokafka's own: every worker pays it for
        # every entry any worker writes (docs/capacity.md), so it is timed on its own.
        fresh = [
            (f"new/{index}".encode(), as_read({"written_at": now, "value": value}))
            for index in range(100_000)
        ]
        started = time.process_time()
        for key_bytes, raw in fresh:
            holder._apply(key_bytes, raw)
        apply_us = (time.process_time() - started) / len(fresh) * 1e6
    print(
        json.dumps(
            {
                "mode": mode,
                "entries": entries,
                "rss_growth_mib": round(grown / 2**20, 1),
                "bytes_per_entry": round(grown / count),
                "lookup_us": round(lookup_us, 3),
                "apply_us": None if apply_us is None else round(apply_us, 2),
                "fill_s": round(fill_s, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
