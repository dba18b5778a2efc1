"""The probes beside /metrics: 503 with the reason while a check gives one, 200 once it does not."""

from __future__ import annotations

import socket

import aiohttp

from streams.metrics.exposition import start_metrics_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_readyz_follows_its_check_and_healthz_its_own() -> None:
    reason: list[str | None] = ["starting: 1 of 2 agents running (memories loading)"]
    port = _free_port()
    runner = await start_metrics_server(
        "127.0.0.1", port, alive=lambda: None, ready=lambda: reason[0]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert await response.text() == f"{reason[0]}\n"
            async with session.get(f"{base}/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok\n")
            reason[0] = None
            async with session.get(f"{base}/readyz") as response:
                assert (response.status, await response.text()) == (200, "ok\n")
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_without_checks_both_probes_answer_while_serving() -> None:
    port = _free_port()
    runner = await start_metrics_server("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == 200, path
    finally:
        await runner.cleanup()
