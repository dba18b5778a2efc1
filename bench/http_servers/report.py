"""bench/results/http_servers.{json,md}: run.py and protections.py each write their part of
the JSON; the Markdown is rendered from the whole of it, so either can be run again alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"

# What each server's defaults are for the behaviours attacked, and the setting that changes it
# (read from each project's code and CLI help at the versions measured).
SETTINGS = {
    "hookstream": (
        "`gateway.idle_timeout_s` (75 s: a head not complete 75 s after its first byte, and an "
        "idle keep-alive connection, are closed), `gateway.body_timeout_s` (10 s, then 408), "
        "`gateway.max_body_bytes` (1 MiB, held on the wire and once decoded); fixed: 64 KiB "
        "head (431), 128 header lines (431 from the 129th), 32 queued / 128 pipelined "
        "requests, reading paused "
        "while the client does not read its answers, 16 gzip members"
    ),
    "aiohttp": (
        "`max_line_size`/`max_field_size` (8190), `max_headers` (128: 400 from the 129th "
        "line), `client_max_size` (1 MiB, in `request.read()`), `auto_decompress` (True), "
        "`keepalive_timeout` (3630 s under `AppRunner`, 75 s under `run_app`), "
        "`lingering_time` (10 s); no timeout on a head or a body being received"
    ),
    "uvicorn": (
        "`--timeout-keep-alive` (5 s, between requests only), `--limit-concurrency` (none), "
        "`--h11-max-incomplete-event-size` (h11 only, not httptools); no head or body timeout, "
        "no head size or header count limit with httptools (403 header lines answered 202 in a "
        "probe); the body is the app's to limit and decode"
    ),
    "granian-asgi": (
        "`--http1-header-read-timeout` (30,000 ms), `--http1-buffer-size` (417,792 bytes), "
        "`--backpressure` (backlog/workers = 1024); 100 header lines (431 from the 101st: "
        "hyper's limit, no granian option); no body timeout option; the body is the app's to "
        "limit and decode"
    ),
    "granian-rsgi": "as granian-asgi",
}

ATTACKS = {
    "slowloris_trickle": "slowloris: head never finished, a header line every 2 s",
    "slowloris_silent": "slowloris: head never finished, then silence",
    "half_body": "body stops half-way (Content-Length 1000, 500 sent)",
    "endless_header": "one endless header value (up to 64 MiB / 30 s)",
    "pipelined_flood": "10,000 pipelined POSTs, answers never read (10 s)",
    "pipelined_flood_100000": "100,000 pipelined POSTs, answers never read (10 s)",
    "gzip_bomb": "gzip bomb body (512 MiB of zeros in ~0.5 MB)",
    "content_length_5000_digits": "Content-Length of 5,000 digits",
    "headers_200": "200 header lines",
    "headers_10000": "10,000 header lines",
}


def update(out: Path, key: str, part: dict[str, Any], *, merge: bool = False) -> None:
    """Set ``key`` of http_servers.json to ``part`` (with ``merge``, only its attacks), and
    render http_servers.md from the whole file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "http_servers.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if merge and key in data:
        for attack, by_server in part["results"].items():
            data[key]["results"].setdefault(attack, {}).update(by_server)
    else:
        data[key] = part
    path.write_text(json.dumps(data, indent=2) + "\n")
    (out / "http_servers.md").write_text(markdown(data))


def markdown(data: dict[str, Any]) -> str:
    parts = [
        "# HTTP servers: hookstream's own HTTP/1.1 layer against aiohttp, uvicorn and granian\n",
        "`make bench-http` (bench/http_servers/: run.py for throughput, protections.py for "
        "the attacks). The same trivial webhook handler on each server: read the POST body, "
        'answer 202 with `{"status":"accepted"}` (bench/http_servers/apps.py). Every server '
        "at its defaults, under uvloop, one process (granian: one worker).\n",
    ]
    if "throughput" in data:
        parts.append(_throughput(data["throughput"], "Throughput"))
    if "throughput_unpinned" in data:
        parts.append(
            _throughput(data["throughput_unpinned"], "Throughput, nothing pinned (a second run)")
        )
    if "protections" in data:
        parts.append(_protections(data["protections"]))
    return "\n".join(parts)


def _throughput(t: dict[str, Any], title: str) -> str:
    s = t["summary"]
    st = t["settings"]
    m = t["machine"]
    names = list(t["servers"])
    rows = "\n".join(
        f"| {n} | {s['req_per_s'][n]:.0f} | {s['req_per_s_over_aiohttp'][n]:.2f} | "
        f"{s['p50_ms'][n]:.2f} | {s['p99_ms'][n]:.2f} | {s['p99_over_aiohttp'][n]:.2f} | "
        f"{s['cpu_us_per_req'][n]:.1f} | {s['aiohttp_cpu_over_cpu'][n]:.2f} | "
        f"{s['rss_mib_after'][n]:.1f} | {s['non_2xx'][n]} |"
        for n in names
    )
    labels = "\n".join(f"- **{n}**: {label}" for n, label in t["servers"].items())
    pinned = (
        f"servers pinned to CPU {st['server_cpus']}, wrk and this script to CPU "
        f"{st['loadgen_cpus']} (granian's Rust I/O thread and its Python thread then share "
        "that one core, as the other servers' single event-loop thread has it alone)"
        if st["server_cpus"]
        else "nothing pinned: servers, wrk and other work share both cores, and granian's "
        "I/O thread can run beside its Python thread"
    )
    paced = ""
    if t.get("paced"):
        prow = "\n".join(
            f"| {n} | {p['req_per_s']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
            f"{p['max_ms']:.2f} | {p['non_2xx']} |"
            for n, p in t["paced"].items()
        )
        rate = next(iter(t["paced"].values()))["target_rate_per_s"]
        paced = f"""
Latency when not saturated: each server paced at the same rate, half the slowest server's
median ({rate:.0f} req/s asked; 64 connections paced by wrk's `delay` hook).

| server | req/s | p50 ms | p99 ms | max ms | non-2xx |
|---|---:|---:|---:|---:|---:|
{prow}
"""
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"""## {title}

Closed loop: {st["load_generator"]}, {st["connections"]} connections, {st["duration_s"]} s per
round, {st["rounds"]} interleaved rounds (the first server rotating); figures are medians of the
rounds, and each ratio is the median of the rounds' ratios to aiohttp in the same round.
{st["distinct_bodies"]} distinct JSON bodies of {st["body_bytes"]} bytes, cycled; {pinned}.
CPU per request: the server's user + system time over a round (/proc/<pid>/stat, summed over
its processes and threads) / requests answered.

{labels}

| server | req/s | ÷ aiohttp | p50 ms | p99 ms | p99 ÷ aiohttp | CPU µs/req | aiohttp CPU ÷ this | RSS MiB after | non-2xx |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}
{paced}
Machine: {m["cpu"]}, {m["cores"]} cores (shared with other work; load average at start
{m["load_average_at_start"]}); {m["os"]}; Python {m["python"]}; {versions}. hookstream's
layer from the {st.get("hookstream_code", "work tree")}. Wall time {st["wall_s"]} s.
"""  # noqa: E501


def _cell(attack: str, o: dict[str, Any]) -> str:
    """One outcome in a few words and figures."""
    if attack.startswith("pipelined_flood"):
        end = o.get("server_end")
        closed = f"; closed ({end['closed']})" if end and end.get("closed") else ""
        text = (
            f"client wrote {o['bytes_written'] / 2**20:.1f} of {o['bytes_total'] / 2**20:.1f} "
            f"MiB{closed}; RSS +{o['rss_growth_mib']} MiB"
        )
    else:
        status = o.get("status")
        ended = o.get("closed")
        when = o.get("after_s")
        if o.get("held_s"):
            text = f"open after {o['held_s']:g} s"
        elif status:
            text = f"{status}" + (f" after {when:g} s" if when is not None else "")
            if ended:
                text += f", closed ({ended})"
        elif ended:
            text = f"closed ({ended}) without answer" + (
                f" after {when:g} s" if when is not None else ""
            )
        else:
            text = "no answer, still open"
        if attack == "endless_header":
            text += f"; {o['value_bytes_sent'] / 1024:.0f} KiB sent"
        if "rss_growth_mib" in o and attack not in ("content_length_5000_digits",):
            text += f"; RSS +{o['rss_growth_mib']} MiB"
    if o.get("server_cpu_s", 0) >= 0.1:
        text += f"; server CPU {o['server_cpu_s']:g} s"
    after = o.get("normal_request_after", {})
    if after.get("status") != 202:
        text += f"; **then a normal request: {after.get('status') or after.get('error')}**"
    return text


def _in_order(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """The attacks in the order of :data:`ATTACKS` (a partial re-run appends to the JSON)."""
    rank = {name: index for index, name in enumerate(ATTACKS)}
    return sorted(results.items(), key=lambda item: rank.get(item[0], len(rank)))


def _exposed(attack: str, o: dict[str, Any]) -> str | None:
    """Why an outcome leaves the server exposed, in figures; None when it defended itself."""
    if o.get("held_s"):
        return f"held the connection {o['held_s']:g} s"
    if attack == "endless_header" and not o.get("status"):
        return (
            f"took {o['value_bytes_sent'] / 2**20:.0f} MiB of one header without answering "
            f"(RSS +{o['rss_growth_mib']} MiB, {o['server_cpu_s']:g} s CPU)"
        )
    if attack.startswith("pipelined_flood") and o["rss_growth_mib"] >= 10:
        return f"RSS +{o['rss_growth_mib']} MiB"
    if attack == "gzip_bomb" and o.get("status") == 202:
        return "handed the compressed body to the app (202): decoding and its limit are the app's"
    if attack.startswith("headers_") and o.get("status") == 202:
        return "accepted them (202)"
    return None


def _differences(p: dict[str, Any]) -> str:
    lines = []
    for attack, by_server in _in_order(p["results"]):
        exposed = {n: why for n, o in by_server.items() if (why := _exposed(attack, o))}
        if not exposed:
            continue
        guarded = [n for n in by_server if n not in exposed]
        text = "; ".join(f"{n} {why}" for n, why in exposed.items())
        lines.append(
            f"- {ATTACKS.get(attack, attack)}: {text}. "
            f"Defended: {', '.join(guarded) if guarded else 'none'}."
        )
    return "\n".join(lines)


def _protections(p: dict[str, Any]) -> str:
    names = list(p["servers"])
    header = "| attack | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(names)
    rows = []
    for attack, by_server in _in_order(p["results"]):
        cells = [_cell(attack, by_server[n]) if n in by_server else "" for n in names]
        rows.append(f"| {ATTACKS.get(attack, attack)} | " + " | ".join(cells) + " |")
    settings = "\n".join(f"- **{n}**: {SETTINGS.get(n, '')}" for n in names)
    st = p["settings"]
    return f"""## Protections

bench/http_servers/protections.py: each attack from a raw socket on 127.0.0.1 against a freshly
started server (so that one attack's memory does not hide the next one's), at its defaults.
The waiting attacks (slowloris, half body) are given {st["cap_s"]:g} s; "open after" means the
server still held the connection then. RSS: the server's resident memory (all its processes),
sampled every 50 ms, peak minus the value after one normal request; the server's CPU time
during the attack is shown from 0.1 s. "client wrote": bytes the client got into the socket
(both sides' kernel buffers count) while never reading. After every attack a normal
request is sent; only a failure is shown. An ASGI/RSGI server hands the app the body as sent:
for the gzip bomb, 202 means the app got the 0.5 MB compressed body, and decoding and limiting
it would be the app's work. "fin": the server closed; "reset": it reset the connection.

{header}
{rule}
{chr(10).join(rows)}

Where they differ (generated from the table):

{_differences(p)}

What governs each behaviour, with the default used here:

{settings}

hookstream's layer from the {st.get("hookstream_code", "work tree")}. Wall time
{st["wall_s"]} s; load average at start {st["load_average_at_start"]}.
"""
