"""Benchmark: what the trace context and OpenTelemetry spans cost the gateway.

The gateway of bench/gateway/run.py (Standard Webhooks verification, acks=all), in four
variants started side by side and driven in alternated rounds by wrk (64 connections, closed
loop), each figure the median of its rounds:

- ``before``: the code of ``--before REV`` (default: the commit before tracing), its own
  checkout, no trace context at all (the CloudEvent's traceid a random id);
- ``off``: this code, spans off (no OTEL_* variable): a new trace per webhook, its
  ``traceparent`` written as a record header;
- ``off-sender``: the same, the senders sending a ``traceparent`` (parsed and continued);
- ``on``: spans on, exported over OTLP/HTTP to a receiver that answers 200 and drops them
  (three spans per webhook, batched by the SDK's BatchSpanProcessor in the gateway process);
- ``on-1pct``: the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
  ``OTEL_TRACES_SAMPLER_ARG=0.01`` (one webhook in a hundred recorded).

The server's CPU per answered request is the steadier figure on a shared machine; req/s is
reported too. Writes bench/results/tracing_gateway.md and .json.
Usage: KAFKA_BOOTSTRAP_SERVERS=… python bench/tracing/gateway.py [--before REV] [--duration-s 8]
[--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import random
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.broker import free_port  # noqa: E402

BEFORE_TRACING = "06b7a9c"  # the last commit before the trace context (issue 13)
RESULTS = ROOT / "bench" / "results"
RECEIVER = """
import sys
from aiohttp import web

async def traces(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")

app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/v1/traces", traces)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# bench/logs/gateway.py's signed requests, over bench/gateway/run.py's servers and wrk driver.
LOGS = _load("bench_logs_gateway", ROOT / "bench" / "logs" / "gateway.py")
GATEWAY = LOGS.GATEWAY


def checkout(rev: str, into: Path) -> str:
    """``rev``'s tree in ``into`` (git archive: no worktree, nothing in .git changes)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = into.with_suffix(".tar")
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return commit


def start(name: str, cwd: Path, config: Path, env: dict[str, str], log: Path) -> Any:
    """A gateway from the code in ``cwd`` (``-m`` puts the working directory first)."""
    command = [GATEWAY.PY, "-m", "streams.cli.main", "gateway", "-c", str(config), "-l", "info"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = GATEWAY._LISTENING.search(log.read_text(errors="replace"))
        if match:
            return GATEWAY.Server(name, process, match.group(1).split('"')[0])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"bench: {name} did not start:\n{log.read_text(errors='replace')[-2000:]}")


def with_traceparent(requests: list[tuple[bytes, dict[str, str]]]) -> Any:
    rng = random.Random(7)  # noqa: S311 - trace ids, not secrets
    return [
        (
            body,
            {
                **headers,
                "traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01",
            },
        )
        for body, headers in requests
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE_TRACING)
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    wrk = GATEWAY.ensure_wrk()
    if not bootstrap or not wrk:
        raise SystemExit("bench: needs KAFKA_BOOTSTRAP_SERVERS and wrk")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    plain = LOGS.signed_requests(secret, 64)
    base_env = {**os.environ, "BENCH_WEBHOOK_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    for name in list(base_env):
        if name.startswith("OTEL_") or name in ("KAFKA_BOOTSTRAP_SERVERS", "HOOKSTREAM_LOG_FORMAT"):
            del base_env[name]
    receiver_port = free_port()
    info = GATEWAY.machine()
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-tracing-") as tmp:
        work = Path(tmp)
        before_dir = work / "before"
        before_dir.mkdir()
        commit = checkout(args.before, before_dir)
        receiver = subprocess.Popen([GATEWAY.PY, "-c", RECEIVER, str(receiver_port)])
        on_env = {
            **base_env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        }
        sampled_env = {
            **on_env,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }
        variants = {
            # name: (code directory, environment, requests)
            "before": (before_dir, base_env, plain),
            "off": (ROOT, base_env, plain),
            "off-sender": (ROOT, base_env, with_traceparent(plain)),
            "on": (ROOT, on_env, plain),
            "on-1pct": (ROOT, sampled_env, plain),
        }
        servers = {}
        try:
            for name, (code, env, _) in variants.items():
                config = work / f"{name}.yaml"
                config.write_text(
                    GATEWAY.bench_config(bootstrap, f"bench-{uuid.uuid4().hex[:8]}", 0)
                )
                servers[name] = start(name, code, config, env, work / f"{name}.log")
            rounds = GATEWAY.alternate_rounds(
                wrk, servers, lambda name: variants[name][2], work, args
            )
        finally:
            for server in servers.values():
                server.stop()
            receiver.terminate()
            receiver.wait()
    summary = GATEWAY.medians(rounds)
    report = {
        "machine": info,
        "settings": {**vars(args), "before_commit": commit},
        "rounds": rounds,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tracing_gateway.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    base = summary["before"]
    table = [
        "# Gateway: the cost of the trace context and of spans (bench/tracing/gateway.py)",
        "",
        f"wrk, {args.connections} connections, {args.duration_s} s per round, medians of "
        f"{args.rounds} alternated rounds; {info['cores']} cores shared with the broker and "
        f"the load generator; `before` is commit {commit}.",
        "",
        "| variant | req/s | vs before | server CPU µs/req | non-2xx |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in summary.items():
        ratio = figures["req_per_s"] / base["req_per_s"]
        table.append(
            f"| {name} | {figures['req_per_s']:,} | {ratio:.2f} | {figures['cpu_us_per_req']} | "
            f"{figures['non_2xx']} |"
        )
    (RESULTS / "tracing_gateway.md").write_text("\n".join(table) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
