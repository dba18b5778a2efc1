"""Benchmark: what a hookstream process pays before it does anything (issue 16).

Measured as whole processes, medians of ``--repeat`` runs, interleaved:

- ``python -c pass``: the interpreter's own start, the floor;
- ``hookstream --help`` (``python -m streams.cli.main --help``);
- ``hookstream worker``: from spawn to its first line of output, and to Faust's
  "Ready" line, on a flows file with one flow and no lookups (needs a broker:
  ``KAFKA_BOOTSTRAP_SERVERS``).

With ``--tree LABEL=DIR`` (repeatable) each tree's code is measured the same way, beside this
checkout's, in the same run (e.g. a copy of the code before a change). Writes
bench/results/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bench.pipeline.run import config  # noqa: E402
from tests.support.stack import SECRETS  # noqa: E402

READY = "[^Worker]: Ready"


def run_s(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


async def worker_s(tree: Path, flows: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first line of output, seconds to Faust's Ready line)."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "streams.cli.main", "worker", "-c", str(flows), "-l", "info"),
        cwd=tree,
        env={**env, "HOOKSTREAM_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    first = None
    try:
        async with asyncio.timeout(180):
            while True:
                line = (await process.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"the worker in {tree} exited before it was ready")
                now = time.perf_counter() - started
                first = now if first is None else first
                if READY in line:
                    return first, now
    finally:
        process.terminate()
        await process.wait()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--tree", action="append", default=[], help="LABEL=DIR: another tree's code, labelled"
    )
    args = parser.parse_args()
    trees = {"this checkout": ROOT}
    trees.update((label, Path(path)) for label, _, path in (t.partition("=") for t in args.tree))
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="hookstream-startup-") as tmp:
        flows = Path(tmp) / "flows.yaml"
        flows.write_text(yaml.safe_dump(config(False), sort_keys=False))
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            **SECRETS,
            "HOOKSTREAM_AI_BASE_URL": "http://127.0.0.1:9/v1",
            "HOOKSTREAM_CRM_URL": "http://127.0.0.1:9",
            "HOOKSTREAM_STATE_DIR": tmp,
        }
        for _ in range(args.repeat):
            samples.setdefault("python -c pass", []).append(
                run_s([sys.executable, "-c", "pass"], ROOT)
            )
            for name, tree in trees.items():
                samples.setdefault(f"{name}: hookstream --help", []).append(
                    run_s([sys.executable, "-m", "streams.cli.main", "--help"], tree)
                )
                first, ready = await worker_s(tree, flows, env)
                samples.setdefault(f"{name}: worker, first output", []).append(first)
                samples.setdefault(f"{name}: worker, Ready", []).append(ready)
    medians = {name: round(statistics.median(v) * 1000, 1) for name, v in samples.items()}
    report = {"repeat": args.repeat, "median_ms": medians, "samples_s": samples}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(report, indent=2) + "\n")
    floor = medians["python -c pass"]
    lines = [
        "# Start-up benchmark",
        "",
        f"`bench/startup/run.py`: medians of {args.repeat} interleaved runs, whole processes "
        "(the worker against a running broker, one flow, no lookups).",
        "",
        "| process | ms | above `python -c pass` |",
        "|---|---:|---:|",
        *(f"| {name} | {ms:,} | {ms - floor:+,.1f} |" for name, ms in medians.items()),
        "",
    ]
    (RESULTS / "startup.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
