"""Summarise a py-spy profile in collapsed form (``py-spy record -f raw``, as
``bench/pipeline/run.py --profile-s`` writes it): total samples, the samples by area of the
worker (each sample in the first area of AREAS any frame of its stack belongs to), then the
top functions by samples spent in themselves (self) and by samples under them (inclusive), as
shares of the total.

Usage: python bench/pipeline/profile.py PROFILE.raw [--top 40] > SUMMARY.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "func (path/file.py:123)": the function and its file, without the line (one entry per function)
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:)]*)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} {match['file']}"


# (area, file fragments): a stack goes to the first area one of its frames' files matches.
# The worker's root frame (mode/worker.py) matches none; the event loop's own waiting shows as
# that root's self samples (uvloop's loop is C).
AREAS = (
    (
        "the model call, client side",
        ("aiohttp/", "agents/outbound/wire.py", "agents/ai/http_client.py", "agents/ai/openai.py"),
    ),
    (
        "Kafka writes (aiokafka's producer, hookstream's writer, emit, map writes)",
        ("aiokafka/producer/", "streams/kafka/producer.py", "agents/emit.py", "partitioner.py"),
    ),
    (
        "Faust and Kafka reads (consumers, the maps' tails)",
        ("faust/", "mode/threads.py", "mode/utils/", "aiokafka/consumer/", "kafka/compacted.py"),
    ),
    ("stage logic (decoding, rendering, validation, metrics, logs)", ("agents/", "schemas/")),
    ("the event loop: tasks, futures, callbacks", ("asyncio/",)),
)


def area_of(files: list[str]) -> str:
    for name, fragments in AREAS:
        if any(fragment in file for file in files for fragment in fragments):
            return name
    return "other (the loop's own, waiting included)"


def summarise(text: str, top: int) -> str:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(f) for f in stack.split(";")]
        areas[area_of([f.rsplit(" ", 1)[-1] for f in frames])] += samples
        own[frames[-1]] += samples
        for name in set(frames):
            under[name] += samples
    lines = [f"total samples {total}", "--- by area"]
    names = [name for name, _ in AREAS] + ["other (the loop's own, waiting included)"]
    lines += [f"{areas[name] / total:6.1%} {areas[name]:6d} {name}" for name in names]
    lines.append("--- self")
    lines += [f"{n / total:6.1%} {name}" for name, n in own.most_common(top)]
    lines.append("--- inclusive")
    lines += [f"{n / total:6.1%} {name}" for name, n in under.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    print(summarise(args.profile.read_text(), args.top), end="")


if __name__ == "__main__":
    main()
