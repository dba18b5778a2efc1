"""A whole hookstream deployment for integration tests: real processes on the real broker.

``running_stack`` starts the AI and CRM simulators, then the gateway, the worker and the sink
worker as separate ``hookstream`` processes on the example config (or another file), with a
uuid topic prefix so tests never see each other's records. Processes can be stopped, killed
with SIGKILL and restarted, which is how crash tests are written.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from streams.gateway.signatures import sign_hmac_sha256
from tests.support.sims import AISimHandle, CRMSimHandle, running_ai_sim, running_crm_sim

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "examples" / "flows.yaml"
SECRETS = {
    "HELPDESK_WEBHOOK_SECRET": "test-helpdesk-secret",
    "PAYMENTS_WEBHOOK_SECRET": "test-payments-secret",
    "AI_API_KEY": "test-ai-key",
}
_LISTENING = re.compile(r" listening on (http://[^\s\"]+)")
_READY_MARK = "[^Worker]: Ready"


@dataclass
class Proc:
    """One hookstream process, its log file and how to start it again."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    url: str | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self, *, ready_timeout_s: float = 90.0) -> None:
        """Start the process and wait until it serves (gateway) or its Faust worker is ready."""
        log_offset = len(self.log_text())
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streams.cli.main",
                *self.args,
                stdout=log_file,
                stderr=log_file,
                cwd=REPO_ROOT,
                env=self.env,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline and self.process.returncode is None:
            text = self.log_text()[log_offset:]
            if self.name == "gateway":
                match = _LISTENING.search(text)
                if match:
                    self.url = match.group(1)
                    return
            elif _READY_MARK in text:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready; log:\n{self.log_text()[-4000:]}")

    async def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 30.0) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return self.process.returncode


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    config_path: Path
    env: dict[str, str]
    ai: AISimHandle
    crm: CRMSimHandle
    workdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    def topic(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    @property
    def gateway_url(self) -> str:
        url = self.procs["gateway"].url
        assert url is not None, "gateway not started"
        return url

    def signed_headers(
        self,
        source: str,
        body: bytes,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        """Headers the example config's senders would send (see examples/flows.yaml)."""
        if source == "helpdesk":
            key = secret or SECRETS["HELPDESK_WEBHOOK_SECRET"]
            digest = sign_hmac_sha256(key.encode(), body, encoding="hex")
            headers = {"X-Signature": f"sha256={digest}"}
            if webhook_id:
                headers["X-Webhook-Id"] = webhook_id
            return headers
        if source == "payments":
            key = secret or SECRETS["PAYMENTS_WEBHOOK_SECRET"]
            ts = int(time.time()) if timestamp is None else timestamp
            digest = sign_hmac_sha256(key.encode(), body, timestamp=ts, encoding="base64")
            return {"X-Payments-Signature": digest, "X-Payments-Timestamp": str(ts)}
        return {}

    async def post(
        self,
        source: str,
        payload: Any = None,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
        webhook_id: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """POST a webhook to the gateway; return (status, JSON body, headers)."""
        assert self.session is not None
        raw = body if body is not None else orjson.dumps(payload)
        all_headers = {"Content-Type": content_type}
        if sign:
            all_headers.update(self.signed_headers(source, raw, webhook_id=webhook_id))
        all_headers.update(headers or {})
        async with self.session.post(
            f"{self.gateway_url}/webhooks/{source}", data=io.BytesIO(raw), headers=all_headers
        ) as response:
            answer = await response.json(content_type=None)
            return response.status, answer, response.headers


def _without(env: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if key != name}


def _proc(stack_env: dict[str, str], workdir: Path, name: str, args: list[str]) -> Proc:
    return Proc(name=name, args=args, env=stack_env, log_path=workdir / f"{name}.log")


@asynccontextmanager
async def running_stack(
    bootstrap: str,
    workdir: Path,
    *,
    config_path: Path = EXAMPLE_CONFIG,
    roles: tuple[str, ...] = ("gateway", "worker", "sinks"),
    extra_env: Mapping[str, str] | None = None,
    ai_knobs: Mapping[str, Any] | None = None,
    prefix: str | None = None,
) -> AsyncIterator[Stack]:
    """``prefix``: the topics' (a test that creates some of them first picks it)."""
    prefix = prefix or f"t{uuid.uuid4().hex[:10]}"
    async with AsyncExitStack() as stack:
        ai = await stack.enter_async_context(running_ai_sim(**dict(ai_knobs or {})))
        crm = await stack.enter_async_context(running_crm_sim())
        env = {
            **os.environ,
            **SECRETS,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKSTREAM_TOPIC_PREFIX": prefix,
            "HOOKSTREAM_AI_BASE_URL": ai.base_url,
            "HOOKSTREAM_CRM_URL": crm.base_url,
            "HOOKSTREAM_STATE_DIR": str(workdir / "state"),
            **dict(extra_env or {}),
        }
        result = Stack(bootstrap, prefix, config_path, env, ai, crm, workdir)
        result.session = await stack.enter_async_context(aiohttp.ClientSession())
        role_args = {
            "gateway": ["gateway", "-c", str(config_path), "--port", "0"],
            "worker": ["worker", "-c", str(config_path), "-l", "info"],
            "sinks": ["sinks", "-c", str(config_path), "-l", "info"],
        }
        for role in roles:
            # HOOKSTREAM_METRICS_PORT is the worker's here: the sinks read it too, and two
            # processes on one port would make the second one exit (port in use).
            role_env = env if role == "worker" else _without(env, "HOOKSTREAM_METRICS_PORT")
            result.procs[role] = _proc(role_env, workdir, role, role_args[role])

        async def stop_all() -> None:
            # All at once: a Faust process spends about 2 s stopping (leaving its group, then
            # Faust's own wait for its futures), and one after the other these added up in
            # every test (a test's extra processes in ``procs`` included).
            await asyncio.gather(*(proc.stop() for proc in list(result.procs.values())))

        stack.push_async_callback(stop_all)
        # The gateway creates the topics; the workers then find them at start, and start
        # together (each spends most of its start importing and joining its own group).
        if "gateway" in roles:
            await result.procs["gateway"].start()
        async with asyncio.TaskGroup() as starting:
            for role in roles:
                if role != "gateway":
                    starting.create_task(result.procs[role].start())
        yield result
