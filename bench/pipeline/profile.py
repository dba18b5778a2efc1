"""Summarise a py-spy profile in collapsed form (``py-spy record -f raw``, as
``bench/pipeline/run.py --profile-s`` writes it): total samples, the top functions by samples
spent in themselves (self) and by samples under them (inclusive), as shares of the total.

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


def summarise(text: str, top: int) -> str:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for name in set(frames):
            under[name] += samples
    lines = [f"total samples {total}", "--- self"]
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
