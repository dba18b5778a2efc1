"""A flow's ``sinks``: where a result is delivered (HTTP endpoint, Slack, PostgreSQL).

Its own module because the sink kinds grow one by one (each a model with its own fields and
template checks) and share only their base and the discriminated union that picks one by
``kind``; the sink worker (:mod:`agents.sinks`) reads these and nothing of the sources or AI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import pydantic
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from schemas import conditions, templates
from schemas.config_base import (
    COLUMN_PATTERN,
    TABLE_PATTERN,
    ConfigModel,
    Name,
    check_secret_source,
    check_template,
)

# What a sink's templates and its `when` may refer to: the event, its enrichment, the result.
SINK_ROOTS = {"event", "data", "enrichment", "result", "steps", "ai"}
# The fields of any sink kind whose strings are templates: the ones whose ``result.<field>``
# paths are checked against the flow's output schema (schemas.config_checks).
SINK_TEMPLATE_FIELDS = ("url", "body", "text", "columns")


class _SinkBase(ConfigModel):
    """What every sink has: a name, whether replays reach it, retries, the SSRF opt-in."""

    name: Name = Field(
        description="The sink's name in its flow: it names the sink's agent, receipts and "
        "metrics, and is part of each delivery's Idempotency-Key."
    )
    deliver_replays: bool = Field(
        default=True,
        description="Deliver replayed results too (update the CRM again), or skip them.",
    )
    allow_private: bool = Field(
        default=False,
        description="Let this sink reach loopback, private and link-local addresses (refused "
        "by default: SSRF; worker.allow_private_networks does it for all).",
    )
    timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        default=10.0,
        description="The longest one delivery may take, in seconds (postgres: each "
        "statement). A timeout counts as the target being down: the sink pauses and probes.",
    )
    max_attempts: Annotated[int, Field(ge=1, le=50)] = Field(
        default=5,
        description="Attempts of one record while the target serves others; a target that "
        "is down pauses the sink instead (no dead letters for an outage).",
    )
    when: Any = Field(
        default=None,
        description="A condition on the result and its event (result, data, event, enrichment, "
        "ai), e.g. {field: result.sentiment, equals: negative}; same language as match.where. "
        "A result for which it is false is not delivered: receipt and metric outcome "
        "skipped_when. Unset: every result.",
    )
    _when: conditions.Condition | None = PrivateAttr(default=None)

    @field_validator("when")
    @classmethod
    def _check_when(cls, value: Any) -> Any:
        conditions.check(value, SINK_ROOTS)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._when = conditions.check(self.when, SINK_ROOTS)

    def when_holds(self, context: Mapping[str, Any]) -> bool:
        """``when`` on a result's sink context (:func:`agents.sinks.base.sink_context`);
        True when unset."""
        return self._when is None or self._when.holds(context)


class HttpSinkConfig(_SinkBase):
    """An HTTP call per result: the CRM update, any endpoint."""

    kind: Literal["http"] = Field(
        default="http", description="Picks the sink's kind; a sink without one is http."
    )
    method: Literal["PUT", "POST", "PATCH"] = Field(
        default="POST", description="The HTTP method of each delivery."
    )
    url: str = Field(
        description="The URL, a template over event, data, enrichment, result and ai (values "
        "are percent-encoded); its host must resolve to a public address unless "
        "allow_private is set."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Request headers, sent as written (not templates); Idempotency-Key is "
        "always added.",
    )
    body: Any = Field(
        default=None,
        description="The JSON body: any YAML value whose strings are templates over event, "
        "data, enrichment, result and ai; a string that is exactly one placeholder keeps the "
        "value's JSON type. null: no body.",
    )
    success_codes: tuple[int, ...] = Field(
        default=(200, 201, 202, 204),
        description="The statuses that count as delivered. Any other is a failure: 408, 425, "
        "429 and 5xx are retried (see max_attempts), the rest dead-letter the record at once.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="The environment variable holding an API key, sent as Authorization: "
        "Bearer. Unset: none is sent.",
    )
    api_key_file: str | None = Field(
        default=None,
        description="Instead of api_key_env: a file holding the API key (a mounted Kubernetes "
        "or Docker secret), relative to the config file's folder unless absolute; one "
        "trailing line break is ignored.",
    )
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_api_key_source(self) -> Self:
        check_secret_source(self, "api_key", required=False)
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_template(value, SINK_ROOTS)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        for template in templates.templates_in(value):
            check_template(template.source, SINK_ROOTS)
        return value


class SlackSinkConfig(_SinkBase):
    """A Slack incoming webhook: one message per result. Replays are not re-posted by default."""

    kind: Literal["slack"] = Field(description="slack: required to pick this kind.")
    webhook_url_env: str | None = Field(
        default=None,
        description="The environment variable holding the incoming webhook's URL (the URL "
        "is the secret); this or webhook_url_file is required.",
    )
    webhook_url_file: str | None = Field(
        default=None,
        description="Instead of webhook_url_env: a file holding the incoming webhook's URL (a "
        "mounted Kubernetes or Docker secret), relative to the config file's folder unless "
        "absolute; one trailing line break is ignored.",
    )
    text: str = Field(
        description="The message text, a template over event, data, enrichment, result and ai."
    )
    username: str | None = Field(
        default=None, description="The name to post as; unset: the webhook's own."
    )
    icon_emoji: str | None = Field(
        default=None,
        description="The icon to post with, e.g. :robot_face:; unset: the webhook's own.",
    )
    deliver_replays: bool = Field(
        default=False,
        description="Post replayed results too; off by default, so a replay does not post "
        "the same message again.",
    )
    webhook_url: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_webhook_url_source(self) -> Self:
        check_secret_source(self, "webhook_url", required=True)
        return self

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_template(value, SINK_ROOTS)


class PostgresSinkConfig(_SinkBase):
    """An upsert per result into one table: ``INSERT … ON CONFLICT (key) DO UPDATE``, batched."""

    kind: Literal["postgres"] = Field(description="postgres: required to pick this kind.")
    dsn_env: str | None = Field(
        default=None,
        description="The environment variable holding the libpq DSN or URL, e.g. "
        "postgresql://user@host:5432/db; this or dsn_file is required.",
    )
    dsn_file: str | None = Field(
        default=None,
        description="Instead of dsn_env: a file holding the libpq DSN or URL (a mounted "
        "Kubernetes or Docker secret), relative to the config file's folder unless absolute; "
        "one trailing line break is ignored.",
    )
    table: Annotated[
        str, Field(pattern=TABLE_PATTERN, description="Table, optionally schema.table.")
    ]
    key: tuple[Annotated[str, Field(pattern=COLUMN_PATTERN)], ...] = Field(
        min_length=1, description="Columns of the table's primary key or unique constraint."
    )
    columns: dict[Annotated[str, Field(pattern=COLUMN_PATTERN)], Any] = Field(
        description="Column name → value template; PostgreSQL casts each JSON value."
    )
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=200,
        description="The most rows in one upsert statement; a batch is written when this "
        "many are queued or linger_ms after its first row.",
    )
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=20,
        description="How long a batch waits for more rows after its first, in milliseconds; "
        "0: no waiting.",
    )
    dsn: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_dsn_source(self) -> Self:
        check_secret_source(self, "dsn", required=True)
        return self

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, Any]) -> dict[str, Any]:
        for template in templates.templates_in(value):
            check_template(template.source, SINK_ROOTS)
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
