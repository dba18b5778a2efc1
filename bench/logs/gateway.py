"""Benchmark: what logging each accepted webhook costs the gateway (gateway.log_accepted).

The gateway of bench/gateway/run.py (Standard Webhooks verification, acks=all), at
``--loglevel info``, in four variants started side by side and driven in alternated rounds by
wrk (64 connections, closed loop), each figure the median of its rounds:

- ``default``: log_accepted debug (the default), so no line at info: one level check;
- ``json-sampled``: log_accepted info, log_accepted_sample_rate 0.01, --log-format json;
- ``json-every``: log_accepted info, every webhook a JSON line;
- ``text-every``: log_accepted info, every webhook a text line.

Logs go to a file, as a container runtime's would. The server's CPU per answered request
is the steadier figure on a shared machine; req/s is reported too.
Writes bench/results/gateway_logs.md and .json.
Usage: KAFKA_BOOTSTRAP_SERVERS=… python bench/logs/gateway.py [--duration-s 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import secrets
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _gateway_bench() -> Any:
    """bench/gateway/run.py, whose server start, wrk driver and config this reuses."""
    path = ROOT / "bench" / "gateway" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_gateway_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GATEWAY = _gateway_bench()
Requests = list[tuple[bytes, dict[str, str]]]
RESULTS = ROOT / "bench" / "results"
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # name: (extra gateway settings, extra command-line arguments)
    "default": ("", []),
    "json-sampled": (
        "  log_accepted: info\n  log_accepted_sample_rate: 0.01\n",
        ["--log-format", "json"],
    ),
    "json-every": ("  log_accepted: info\n", ["--log-format", "json"]),
    "text-every": ("  log_accepted: info\n", ["--log-format", "text"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    wrk = GATEWAY.ensure_wrk()
    if not bootstrap or not wrk:
        raise SystemExit("bench: needs KAFKA_BOOTSTRAP_SERVERS and wrk")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    requests = GATEWAY.webhook_requests(64, secret)
    env = {**os.environ, "BENCH_WEBHOOK_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("HOOKSTREAM_LOG_FORMAT", None)
    info = GATEWAY.machine()
    lines: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-logs-") as tmp:
        work = Path(tmp)
        servers = {}
        try:
            for name, (settings, extra) in VARIANTS.items():
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                text = GATEWAY.bench_config(bootstrap, prefix, 0).replace(
                    "gateway:\n", "gateway:\n" + settings
                )
                config = work / f"{name}.yaml"
                config.write_text(text)
                command = [
                    GATEWAY.PY,
                    "-m",
                    "streams.cli.main",
                    "gateway",
                    "-c",
                    str(config),
                    "-l",
                    "info",
                ]
                server = GATEWAY.start(name, [*command, *extra], env, work / f"{name}.log")
                server.url = server.url.split('"')[0]  # its pattern reads on into a JSON line
                servers[name] = server
            rounds = GATEWAY.alternate_rounds(wrk, servers, lambda _: requests, work, args)
        finally:
            for server in servers.values():
                server.stop()
        for name in VARIANTS:
            lines[name] = sum(
                1 for line in (work / f"{name}.log").read_text().splitlines() if "accepted" in line
            )
    summary = GATEWAY.medians(rounds)
    for name, figures in summary.items():
        figures["accepted_lines"] = lines[name]
    report = {"machine": info, "settings": vars(args), "rounds": rounds, "summary": summary}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway_logs.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    base = summary["default"]
    table = [
        "# Gateway: the cost of logging accepted webhooks (bench/logs/gateway.py)",
        "",
        f"wrk, {args.connections} connections, {args.duration_s} s per round, medians of "
        f"{args.rounds} alternated rounds; {info['cores']} cores shared with the broker and "
        "the load generator; gateway at --loglevel info, logs to a file.",
        "",
        "| variant | req/s | vs default | server CPU µs/req | accepted lines (warm-up included) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in summary.items():
        ratio = figures["req_per_s"] / base["req_per_s"]
        table.append(
            f"| {name} | {figures['req_per_s']:,} | {ratio:.2f} | {figures['cpu_us_per_req']} | "
            f"{figures['accepted_lines']:,} of {figures['requests']:,} |"
        )
    (RESULTS / "gateway_logs.md").write_text("\n".join(table) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
