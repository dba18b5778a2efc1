"""Test support for the sinks, DLQ, replay and client tests: the Slack simulator, the
PostgreSQL server (from ``make test``; missing means failure, never a skip) and a flows file
with every kind of sink."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.support.sims import REPO_ROOT, _launch, _SimHandle

POSTGRES_ENV = "HOOKSTREAM_TEST_POSTGRES_DSN"
EXAMPLE = REPO_ROOT / "examples" / "flows.yaml"
SSRF_URL = "http://169.254.169.254/latest/meta-data/{{ data.customer_id }}"


def postgres_dsn() -> str:
    dsn = os.environ.get(POSTGRES_ENV)
    if not dsn:
        pytest.fail(
            f"{POSTGRES_ENV} is not set: run the tests with `make test`, which starts a local "
            "PostgreSQL server (scripts/postgres), or point it at one"
        )
    return dsn


class SlackSimHandle(_SimHandle):
    def webhook_url(self, channel: str) -> str:
        return f"{self.root_url}/slack/{channel}"

    async def messages(self, after: int = 0) -> list[dict[str, Any]]:
        found = await self.request_json("GET", "/_sim/messages", params={"after": str(after)})
        messages: list[dict[str, Any]] = found["messages"]
        return messages


@asynccontextmanager
async def running_slack_sim() -> AsyncIterator[SlackSimHandle]:
    async with _launch(
        "streams.dev.slack_sim", ["--port", "0"], api_key=None, startup_timeout_s=30
    ) as (
        url,
        process,
    ):
        handle = SlackSimHandle(url, process)
        try:
            yield handle
        finally:
            await handle.session.close()


async def create_table(dsn: str) -> str:
    """A fresh table for the PostgreSQL sink: one row per customer."""
    table = f"crm_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            f"CREATE TABLE {table} (customer_id text PRIMARY KEY, sentiment text NOT NULL, "
            "summary text, event_id text, updates integer DEFAULT 0, "
            "updated_at timestamptz DEFAULT now())"
        )
    finally:
        await connection.close()
    return table


async def table_rows(dsn: str, table: str) -> dict[str, dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(f"SELECT * FROM {table}")  # noqa: S608 - test's own table
    finally:
        await connection.close()
    return {row["customer_id"]: dict(row) for row in rows}


def sinks_config(workdir: Path, table: str, *, ssrf_sink: bool = True) -> Path:
    """The example flows file with private networks refused by default, the simulators allowed
    one by one, and the feedback flow also posting to Slack and upserting into ``table``."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["worker"] = {"allow_private_networks": False, "retry_backoff_s": 0.2}
    for flow in data["flows"]:
        for lookup in flow.get("enrich", []):
            lookup["allow_private"] = True
        for sink in flow["sinks"]:
            sink["allow_private"] = True
    feedback = data["flows"][0]
    feedback["sinks"] += [
        {
            "name": "slack",
            "kind": "slack",
            "webhook_url_env": "TEST_SLACK_WEBHOOK_URL",
            "text": "{{ data.customer_id }}: {{ result.sentiment }} {{ result.summary }}",
            "allow_private": True,
        },
        {
            "name": "warehouse",
            "kind": "postgres",
            "dsn_env": POSTGRES_ENV,
            "table": table,
            "key": ["customer_id"],
            "columns": {
                "customer_id": "{{ data.customer_id }}",
                "sentiment": "{{ result.sentiment }}",
                "summary": "{{ result.summary }}",
                "event_id": "{{ event.id }}",
            },
            "batch_size": 50,
            "linger_ms": 20,
        },
    ]
    if ssrf_sink:
        feedback["sinks"].append(
            {"name": "internal", "kind": "http", "method": "POST", "url": SSRF_URL, "body": {}}
        )
    path = workdir / "flows-sinks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def run_cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def wait_until(predicate: Any, *, timeout_s: float = 60.0, poll_s: float = 0.25) -> Any:
    """Poll an async predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(poll_s)
