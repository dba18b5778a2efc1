"""PostgreSQL sink: upsert each result into a configured table, in batches.

One statement per batch, whatever its size::

    INSERT INTO t (c1, c2, …)
    SELECT c1, c2, … FROM json_populate_recordset(NULL::t, $1::json)
    ON CONFLICT (key…) DO UPDATE SET c2 = EXCLUDED.c2, …

The rows travel as one JSON array, and PostgreSQL casts each value to its column's type
(``json_populate_recordset``), so the config needs no type mapping. The upsert is idempotent:
redelivering a result writes the same row again. Within a batch, a later result for the same
key replaces an earlier one (ON CONFLICT cannot touch a row twice in one statement), which is
what writing them one after the other would have left.

Errors: a lost connection, a server shutting down or starting, serialization failures and
deadlocks (SQLSTATE classes 08, 40, 53, 57, 58) are retriable — the sink pauses until the
server is back; any other error (no such table or column, a value that does not cast) is
permanent and dead-letters the record. The DSN is operator config, not built from event data,
so it does not pass the SSRF guard.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson

from agents.sinks.base import STAGE, BatchingSink, Delivery
from schemas import templates
from schemas.config_base import secret_origin
from schemas.config_sinks import PostgresSinkConfig
from schemas.errors import ConfigError, PermanentRemoteError, RetriableRemoteError, StageError

log = logging.getLogger(__name__)

RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def quote_ident(name: str) -> str:
    """``schema.table`` → ``"schema"."table"`` (names are checked by the config already)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def upsert_sql(config: PostgresSinkConfig) -> str:
    table = quote_ident(config.table)
    columns = list(config.columns)
    names = ", ".join(quote_ident(c) for c in columns)
    keys = ", ".join(quote_ident(k) for k in config.key)
    updates = [c for c in columns if c not in config.key]
    action = (
        "DO UPDATE SET "
        + ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updates)
        if updates
        else "DO NOTHING"
    )
    # Identifiers are checked by the config and quoted; the values travel as $1.
    insert = f"INSERT INTO {table} ({names}) "
    select = f"SELECT {names} FROM json_populate_recordset(NULL::{table}, $1::json) "  # noqa: S608
    return insert + select + f"ON CONFLICT ({keys}) {action}"


def classify(exc: BaseException, what: str) -> StageError:
    """Map a driver error onto the exception tree (retriable = the server is the problem)."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        message = f"{what}: SQLSTATE {sqlstate}: {exc}"
        if sqlstate[:2] in RETRIABLE_SQLSTATE_CLASSES:
            return RetriableRemoteError(message, stage=STAGE)
        return PermanentRemoteError(message, stage=STAGE)
    return RetriableRemoteError(f"{what}: {type(exc).__name__}: {exc}", stage=STAGE)


def postgres_row(config: PostgresSinkConfig, context: dict[str, Any]) -> dict[str, Any]:
    """One result's row, column → JSON value (``hookstream flow test`` prints it)."""
    return {
        column: templates.render_json(value, context) for column, value in config.columns.items()
    }


class PostgresSink(BatchingSink):
    def __init__(self, flow: str, config: PostgresSinkConfig) -> None:
        super().__init__(
            flow, config.name, batch_size=config.batch_size, linger_ms=config.linger_ms
        )
        if config.dsn is None:
            raise ConfigError([f"sink {config.name}: no DSN in {secret_origin(config, 'dsn')}"])
        self.config = config
        self.dsn = config.dsn.get_secret_value()
        self.sql = upsert_sql(config)
        self._pool: asyncpg.Pool | None = None

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            # min_size=0: a server that is down at start is an outage to wait out, not a crash.
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=2,
                command_timeout=self.config.timeout_s,
            )
        return self._pool

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def row(self, delivery: Delivery) -> dict[str, Any]:
        return postgres_row(self.config, delivery.context)

    async def write(self, batch: list[Delivery]) -> None:
        rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for delivery in batch:
            row = self.row(delivery)
            key = tuple(orjson.dumps(row.get(k)).decode() for k in self.config.key)
            rows.pop(key, None)
            rows[key] = row  # the latest result per key wins, as if written one by one
        payload = orjson.dumps(list(rows.values())).decode()
        try:
            pool = await self._connect()
            async with pool.acquire() as connection:
                await connection.execute(self.sql, payload)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise classify(exc, self.what) from exc
