"""HTTP servers benchmark: the same trivial webhook handler on hookstream's own HTTP/1.1 layer,
aiohttp, uvicorn and granian (apps.py), driven by wrk.

For the decision record on the own layer (streams/http/): what it costs per request against
the servers one would otherwise pick, with nothing else in the way (no Kafka, no signature).

- Each server is one process (granian: one worker, beside its supervising process; both
  counted), pinned to one core (``--server-cpu``); this script and wrk are pinned to another
  (``--loadgen-cpu``), so that every server gets the same core and wrk never competes with it.
- Rounds are interleaved (each round runs every server once, the starting server rotating),
  so a neighbour's burst of CPU hits all alike; each figure is the median of the rounds.
- Per round: req/s and latency from wrk (``-t1``, the same connections and duration for all),
  the server's CPU per request (user + system time from /proc/<pid>/stat over the round /
  requests answered), and each figure's ratio to aiohttp's in the same round.
- Then each server is paced at one common rate (half the slowest server's median) for its
  latency when not saturated.

Writes the "throughput" part of bench/results/http_servers.json and re-renders
http_servers.md (protections.py writes the "protections" part). ``make bench-http``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import servers  # noqa: E402


def gateway_bench() -> ModuleType:
    """bench/gateway/run.py, for its wrk driver (script, run, paced run, install)."""
    path = HERE.parent / "gateway" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_gateway_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        name: version(name) for name in ("aiohttp", "uvicorn", "granian", "httptools", "uvloop")
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions(),
    }


def closed_round(
    gw: ModuleType, wrk: str, server: servers.Server, reqs: Any, work: Path, args: Any
) -> dict[str, Any]:
    cpu_before_s = server.cpu_s()
    loadgen_before_s = gw.children_cpu_s()
    figures: dict[str, Any] = gw.run_wrk(
        wrk,
        f"{server.url}/webhooks/bench",
        reqs,
        work,
        connections=args.connections,
        duration_s=args.duration_s,
    )
    answered = figures["requests"] or 1
    figures["cpu_us_per_req"] = round((server.cpu_s() - cpu_before_s) * 1e6 / answered, 1)
    figures["loadgen_cpu_us_per_req"] = round(
        (gw.children_cpu_s() - loadgen_before_s) * 1e6 / answered, 1
    )
    figures["rss_mib_after"] = round(server.rss_bytes() / 2**20, 1)
    return figures


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def med(name: str, key: str) -> float:
        return round(float(statistics.median(r[key] for r in rounds[name])), 2)

    def paired(name: str, key: str, invert: bool = False) -> float:
        """Median over rounds of this server's figure / aiohttp's in the same round."""
        ratios: list[float] = []
        for mine, theirs in zip(rounds[name], rounds["aiohttp"], strict=True):
            a, b = mine[key], theirs[key]
            ratios.append(b / a if invert else a / b)
        return round(statistics.median(ratios), 3)

    names = list(rounds)
    return {
        "req_per_s": {n: med(n, "req_per_s") for n in names},
        "p50_ms": {n: med(n, "p50_ms") for n in names},
        "p99_ms": {n: med(n, "p99_ms") for n in names},
        "cpu_us_per_req": {n: med(n, "cpu_us_per_req") for n in names},
        "loadgen_cpu_us_per_req": {n: med(n, "loadgen_cpu_us_per_req") for n in names},
        "rss_mib_after": {n: med(n, "rss_mib_after") for n in names},
        "non_2xx": {n: sum(r["non_2xx"] for r in rounds[n]) for n in names},
        "socket_errors": {n: sum(r["socket_errors"] for r in rounds[n]) for n in names},
        "req_per_s_over_aiohttp": {n: paired(n, "req_per_s") for n in names},
        # > 1: cheaper than aiohttp (aiohttp's CPU per request / this server's)
        "aiohttp_cpu_over_cpu": {n: paired(n, "cpu_us_per_req", invert=True) for n in names},
        "p99_over_aiohttp": {n: paired(n, "p99_ms") for n in names},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--distinct", type=int, default=64, help="distinct webhooks cycled")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--loadgen-cpu", type=int, default=0)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place all")
    parser.add_argument("--no-paced", action="store_true", help="skip the common-rate run")
    parser.add_argument("--servers", nargs="+", choices=servers.NAMES, default=list(servers.NAMES))
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--code-from",
        metavar="REV",
        help="serve hookstream's layer as committed at REV (git), not from the work tree",
    )
    args = parser.parse_args()
    if "aiohttp" not in args.servers:
        raise SystemExit("bench: aiohttp is the reference; keep it in --servers")
    gw = gateway_bench()
    wrk = gw.ensure_wrk()
    if not wrk:
        raise SystemExit("bench: wrk is needed (apt-get install -y wrk)")
    server_cpus: set[int] | None = None
    if not args.no_pin and (os.cpu_count() or 1) > 1:
        server_cpus = {args.server_cpu}
        os.sched_setaffinity(0, {args.loadgen_cpu})  # wrk, our child, inherits it
    info = machine()
    reqs = gw.webhook_requests(args.distinct)  # unsigned
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.servers}
    paced: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hookstream-bench-http-") as tmp:
        work = Path(tmp)
        code, commit = servers.code_tree(args.code_from, work) if args.code_from else (None, None)
        running: dict[str, servers.Server] = {}
        try:
            for name in args.servers:
                running[name] = servers.start(name, work, cpus=server_cpus, code=code)
            warm = argparse.Namespace(**{**vars(args), "duration_s": 2})
            for server in running.values():
                closed_round(gw, wrk, server, reqs, work, warm)
            order = list(args.servers)
            for round_no in range(1, args.rounds + 1):
                shift = (round_no - 1) % len(order)
                for name in order[shift:] + order[:shift]:
                    figures = closed_round(gw, wrk, running[name], reqs, work, args)
                    figures["round"] = round_no
                    rounds[name].append(figures)
                    print(
                        f"bench: round {round_no} {name}: {figures['req_per_s']:.0f} req/s, "
                        f"p99 {figures['p99_ms']:.2f} ms, "
                        f"CPU {figures['cpu_us_per_req']:.1f} µs/req, "
                        f"non-2xx {figures['non_2xx']}",
                        flush=True,
                    )
            for name in order:  # re-sort each server's rounds by round (pairs stay paired)
                rounds[name].sort(key=lambda r: r["round"])
            summary = summarise(rounds)
            if not args.no_paced:
                rate = min(summary["req_per_s"].values()) / 2
                for name in order:
                    url = f"{running[name].url}/webhooks/bench"
                    paced[name] = gw.half_rate(wrk, url, reqs, work, rate, args)
                    print(f"bench: {name} paced at {rate:.0f} req/s: {paced[name]}", flush=True)
        finally:
            for server in running.values():
                server.stop()
    throughput = {
        "machine": info,
        "settings": {
            "load_generator": "wrk (-t1), Debian's package",
            "connections": args.connections,
            "duration_s": args.duration_s,
            "rounds": args.rounds,
            "body_bytes": len(reqs[0][0]),
            "distinct_bodies": args.distinct,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "loadgen_cpus": [args.loadgen_cpu] if server_cpus else None,
            "wall_s": round(time.monotonic() - started, 1),
            "hookstream_code": f"commit {commit}" if commit else "work tree",
        },
        "servers": {name: servers.LABELS[name] for name in args.servers},
        "rounds": rounds,
        "summary": summary,
        "paced": paced,
    }
    # Unpinned runs are kept beside the pinned one: granian's I/O thread may then use the
    # second core, which the pinned run denies it.
    report.update(args.out, "throughput_unpinned" if args.no_pin else "throughput", throughput)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
