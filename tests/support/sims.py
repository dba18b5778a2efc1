"""Run the development simulators as real processes, for integration tests and benchmarks.

Each simulator runs in its own interpreter (``python -m streams.dev.ai_sim --port 0``) so that the
code under test meets a real socket and a real peer that can be slow, fail or be killed, and so that
the simulator's CPU does not compete with the test's event loop. The launcher waits for the
``<name> listening on http://HOST:PORT`` line, yields a handle, and stops the process on exit
(SIGTERM, then SIGKILL if it does not stop).

::

    async with running_ai_sim(latency_ms=5) as ai, running_crm_sim() as crm:
        client = OpenAI(base_url=ai.base_url, ...)        # http://127.0.0.1:PORT/v1
        ...
        await crm.wait_for_updates(3, customer_id="cus_001")
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY_ENV = "HOOKSTREAM_SIM_API_KEY"
_LISTENING = re.compile(r" listening on (http://\S+)")
_STOP_TIMEOUT_S = 10.0


class SimulatorError(RuntimeError):
    """A simulator did not start, or a control request to it failed."""


class _SimHandle:
    """What both simulators' handles share: the process, its URL and JSON control calls."""

    def __init__(self, root_url: str, process: asyncio.subprocess.Process) -> None:
        self.root_url = root_url
        self.process = process
        # One session per handle, closed by the launcher; control calls are few and sequential.
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    @property
    def returncode(self) -> int | None:
        """The exit status once the launcher has stopped the process (0 = clean shutdown)."""
        return self.process.returncode

    async def request_json(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """A control call; raises :class:`SimulatorError` with the answer's body unless 2xx."""
        async with self.session.request(
            method, self.root_url + path, json=json, params=params
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise SimulatorError(f"{method} {path} answered {response.status}: {text}")
            return await response.json(content_type=None)

    async def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change runtime knobs (``POST /_sim/config``); returns the knobs now in force."""
        result: dict[str, Any] = await self.request_json("POST", "/_sim/config", json=knobs)
        return result

    async def config(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request_json("GET", "/_sim/config")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request_json("GET", "/_sim/stats")
        return result

    async def reset(self) -> dict[str, Any]:
        """Clear counters (AI: also restart the fault sequence; CRM: reseed customers, log)."""
        result: dict[str, Any] = await self.request_json("POST", "/_sim/reset")
        return result

    async def _close(self) -> None:
        await self.session.close()


class AISimHandle(_SimHandle):
    """A running AI simulator. ``base_url`` is what an OpenAI client's ``base_url`` should be."""

    def __init__(
        self, root_url: str, process: asyncio.subprocess.Process, api_key: str | None
    ) -> None:
        super().__init__(root_url, process)
        self.base_url = root_url + "/v1"
        self.api_key = api_key

    async def calls_for(self, user_text: str) -> list[dict[str, Any]]:
        """The recorded completion calls whose last user message was ``user_text``."""
        digest = hashlib.sha256(user_text.encode()).hexdigest()
        calls: list[dict[str, Any]] = (await self.stats())["calls"]
        return [call for call in calls if call["user_text_sha256"] == digest]


class CRMSimHandle(_SimHandle):
    """A running CRM simulator; ``base_url`` is its root (``/customers/{id}`` lives under it)."""

    def __init__(
        self, root_url: str, process: asyncio.subprocess.Process, api_key: str | None
    ) -> None:
        super().__init__(root_url, process)
        self.base_url = root_url
        self.api_key = api_key

    async def updates(self, after: int = 0, customer_id: str | None = None) -> list[dict[str, Any]]:
        """Applied updates with seq > ``after``, in seq order."""
        params = {"after": str(after)}
        if customer_id is not None:
            params["customer_id"] = customer_id
        result = await self.request_json("GET", "/_sim/updates", params=params)
        updates: list[dict[str, Any]] = result["updates"]
        return updates

    async def wait_for_updates(
        self,
        count: int,
        *,
        after: int = 0,
        customer_id: str | None = None,
        timeout_s: float = 30.0,
        poll_s: float = 0.05,
    ) -> list[dict[str, Any]]:
        """Poll until at least ``count`` updates exist; raises TimeoutError with what was seen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = await self.updates(after=after, customer_id=customer_id)
            if len(found) >= count:
                return found
            if loop.time() >= deadline:
                raise TimeoutError(f"expected {count} updates after {after}, got {found}")
            await asyncio.sleep(poll_s)

    async def clear_updates(self) -> None:
        await self.request_json("DELETE", "/_sim/updates")

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The record as the CRM holds it, or None if it does not exist."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.root_url}/customers/{customer_id}"
        async with self.session.get(url, headers=headers) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise SimulatorError(f"GET customer {customer_id}: {response.status}")
            record: dict[str, Any] = await response.json()
            return record


def _flags(knobs: Mapping[str, object]) -> list[str]:
    args: list[str] = []
    for name, value in knobs.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _stderr_text(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode(errors="replace").strip()


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.communicate(), _STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.communicate()


@asynccontextmanager
async def _launch(
    module: str, args: list[str], *, api_key: str | None, startup_timeout_s: float
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """Start ``python -m module args``, wait for its URL, stop it on exit."""
    env = dict(os.environ)
    if api_key is not None:
        env[API_KEY_ENV] = api_key
        args = [*args, "--api-key-env", API_KEY_ENV]
    # A file, not a pipe: nobody reads stderr while the simulator runs, and a full pipe blocks it.
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=REPO_ROOT,
            env=env,
        )
        try:
            assert process.stdout is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), startup_timeout_s)
            except TimeoutError:
                raise SimulatorError(
                    f"{module} printed no 'listening on' line within {startup_timeout_s} s; "
                    f"stderr:\n{_stderr_text(stderr)}"
                ) from None
            match = _LISTENING.search(line.decode(errors="replace"))
            if match is None:
                await _stop(process)
                raise SimulatorError(
                    f"{module} exited with {process.returncode} before listening "
                    f"(stdout {line!r}); stderr:\n{_stderr_text(stderr)}"
                )
            yield match.group(1), process
        finally:
            await _stop(process)


@asynccontextmanager
async def running_ai_sim(
    *,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    rate_429: float = 0.0,
    retry_after_s: int = 1,
    rate_500: float = 0.0,
    rate_malformed: float = 0.0,
    seed: int = 0,
    api_key: str | None = None,
    startup_timeout_s: float = 30.0,
) -> AsyncIterator[AISimHandle]:
    """Run ``streams.dev.ai_sim`` on a free port; with ``api_key``, bearer auth is required."""
    knobs = {
        "latency_ms": latency_ms,
        "jitter_ms": jitter_ms,
        "rate_429": rate_429,
        "retry_after_s": retry_after_s,
        "rate_500": rate_500,
        "rate_malformed": rate_malformed,
        "seed": seed,
    }
    args = ["--port", "0", *_flags(knobs)]
    async with _launch(
        "streams.dev.ai_sim", args, api_key=api_key, startup_timeout_s=startup_timeout_s
    ) as (url, process):
        handle = AISimHandle(url, process, api_key)
        try:
            yield handle
        finally:
            await handle._close()


@asynccontextmanager
async def running_crm_sim(
    *,
    seed_customers: int = 20,
    fail_status: int | None = None,
    rate_500: float = 0.0,
    latency_ms: float = 0.0,
    retry_after_s: int = 1,
    seed: int = 0,
    api_key: str | None = None,
    startup_timeout_s: float = 30.0,
) -> AsyncIterator[CRMSimHandle]:
    """Run ``streams.dev.crm_sim`` on a free port; with ``api_key``, bearer auth is required."""
    knobs = {
        "seed_customers": seed_customers,
        "fail_status": fail_status,
        "rate_500": rate_500,
        "latency_ms": latency_ms,
        "retry_after_s": retry_after_s,
        "seed": seed,
    }
    args = ["--port", "0", *_flags(knobs)]
    async with _launch(
        "streams.dev.crm_sim", args, api_key=api_key, startup_timeout_s=startup_timeout_s
    ) as (url, process):
        handle = CRMSimHandle(url, process, api_key)
        try:
            yield handle
        finally:
            await handle._close()
