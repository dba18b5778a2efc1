"""A flow's ``sinks``: where a result is delivered (HTTP endpoint, Slack, PostgreSQL).

Its own module because the sink kinds grow one by one (each a model with its own fields and
template checks) and share only their base and the discriminated union that picks one by
``kind``; the sink worker (:mod:`agents.sinks`) reads these and nothing of the sources or AI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator, model_validator

from schemas import templates
from schemas.config_base import COLUMN_PATTERN, TABLE_PATTERN, ConfigModel, Name, check_template

# What a sink's templates may refer to: the event, its enrichment and the AI's result.
_SINK_ROOTS = {"event", "data", "enrichment", "result", "ai"}


class _SinkBase(ConfigModel):
    """What every sink has: a name, whether replays reach it, retries, the SSRF opt-in."""

    name: Name
    deliver_replays: bool = Field(
        default=True,
        description="Deliver replayed results too (update the CRM again), or skip them.",
    )
    allow_private: bool = Field(
        default=False,
        description="Allow a loopback/private/link-local target (refused by default: SSRF).",
    )
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = Field(
        default=5,
        description="Attempts of one record while the target serves others; a target that "
        "is down pauses the sink instead (no dead letters for an outage).",
    )


class HttpSinkConfig(_SinkBase):
    """An HTTP call per result: the CRM update, any endpoint."""

    kind: Literal["http"] = "http"
    method: Literal["PUT", "POST", "PATCH"] = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    success_codes: tuple[int, ...] = (200, 201, 202, 204)
    api_key_env: str | None = Field(default=None, description="Sent as a Bearer token.")
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_template(value, _SINK_ROOTS)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        for template in templates.templates_in(value):
            check_template(template.source, _SINK_ROOTS)
        return value


class SlackSinkConfig(_SinkBase):
    """A Slack incoming webhook: one message per result. Replays are not re-posted by default."""

    kind: Literal["slack"]
    webhook_url_env: str = Field(description="Environment variable holding the webhook URL.")
    text: str = Field(description="Message text (template).")
    username: str | None = None
    icon_emoji: str | None = None
    deliver_replays: bool = False
    webhook_url: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_template(value, _SINK_ROOTS)


class PostgresSinkConfig(_SinkBase):
    """An upsert per result into one table: ``INSERT … ON CONFLICT (key) DO UPDATE``, batched."""

    kind: Literal["postgres"]
    dsn_env: str = Field(description="Environment variable holding the libpq DSN/URL.")
    table: Annotated[
        str, Field(pattern=TABLE_PATTERN, description="Table, optionally schema.table.")
    ]
    key: tuple[Annotated[str, Field(pattern=COLUMN_PATTERN)], ...] = Field(
        min_length=1, description="Columns of the table's primary key or unique constraint."
    )
    columns: dict[Annotated[str, Field(pattern=COLUMN_PATTERN)], Any] = Field(
        description="Column name → value template; PostgreSQL casts each JSON value."
    )
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 20
    dsn: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, Any]) -> dict[str, Any]:
        for template in templates.templates_in(value):
            check_template(template.source, _SINK_ROOTS)
        return value

    @model_validator(mode="after")
    def _key_in_columns(self) -> PostgresSinkConfig:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key columns {missing} need a value in columns")
        return self


def _sink_kind(value: Any) -> str:
    kind = value.get("kind", "http") if isinstance(value, dict) else getattr(value, "kind", "http")
    return str(kind)


# ``kind`` picks the model; a sink without one is an HTTP sink (the walking skeleton's only kind).
SinkConfig = Annotated[
    Annotated[HttpSinkConfig, pydantic.Tag("http")]
    | Annotated[SlackSinkConfig, pydantic.Tag("slack")]
    | Annotated[PostgresSinkConfig, pydantic.Tag("postgres")],
    pydantic.Discriminator(_sink_kind),
]
