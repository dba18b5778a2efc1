"""The ``flows`` block: which events a flow takes, what it looks up, what it asks, where it sends.

Its own module because a flow is the one model that ties the others together (a source by name,
lookups, an AI task, sinks): keeping it apart lets the AI and sink modules stay unaware of each
other, and the root config only lists flows.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from schemas import conditions, templates
from schemas.config_ai import AITaskConfig
from schemas.config_base import ConfigModel, Name, check_template
from schemas.config_sinks import SinkConfig

# What match.where may read: the event as received (no lookup has run yet).
WHERE_ROOTS = {"event", "data"}
# What a step's prompt may read: the event, its lookups, and the earlier steps' answers.
STEP_ROOTS = {"event", "data", "enrichment", "steps"}
# What a flow with no AI step builds its output from.
OUTPUT_ROOTS = {"event", "data", "enrichment"}
# A flow with no AI step makes no call: its events are bounded by this many at once.
NO_AI_CONCURRENCY = 16


class MatchConfig(ConfigModel):
    """Which events a flow takes: a source, optionally some of its event types, and optionally
    a condition on the payload (``where``)."""

    source: Name = Field(description="The name of the source (in sources) whose events it takes.")
    types: tuple[str, ...] = Field(
        default=(),
        description="Event type glob patterns, e.g. ticket.*; an event matching any of them is "
        "taken. Empty: every type.",
    )

    where: Any = Field(
        default=None,
        description="A condition on the event's fields (event, data), checked after source and "
        "types: {field: data.amount, gt: 100}, with the operators equals, in, exists, lt, le, "
        "gt, ge, matches, combined with all, any and not (docs/configuration.md, Conditions). "
        "Unset: every event of the source and types.",
    )
    _where: conditions.Condition | None = PrivateAttr(default=None)

    @field_validator("where")
    @classmethod
    def _check_where(cls, value: Any) -> Any:
        conditions.check(value, WHERE_ROOTS)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._where = conditions.check(self.where, WHERE_ROOTS)

    def matches(self, source: str, event_type: str) -> bool:
        """Source and type only: what is known without the payload (replay, console)."""
        if source != self.source:
            return False
        return not self.types or any(fnmatchcase(event_type, p) for p in self.types)

    @property
    def has_where(self) -> bool:
        return self._where is not None

    def where_holds(self, context: Mapping[str, Any]) -> bool:
        """``where`` on the event's render context (``event``, ``data``); True when unset."""
        return self._where is None or self._where.holds(context)


class TableConfig(ConfigModel):
    """A table kept in a compacted Kafka topic: each record's key is a table key, its value
    the JSON the lookup gives (a tombstone deletes the key). Every worker holds it whole
    (:mod:`agents.state.table`)."""

    topic: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] = Field(
        description="The compacted topic, named as it is (kafka.topic_prefix is not added): a "
        "CRM export, a Debezium change stream, a service's own state. It must exist."
    )
    key: str = Field(
        description="The key to look up, a template over event and data, compared with the "
        "records' keys as UTF-8 text, e.g. {{ data.customer_id }}."
    )
    partitions_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="How long a starting worker looks for the topic's partitions before it "
        "takes the topic as missing: it then logs so, stays unready and tries again (lookups "
        "of one topic share the longest of their values).",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_template(value, {"event", "data"})


class LookupCacheConfig(ConfigModel):
    """An HTTP lookup's answers kept in the worker's memory (LRU), keyed by the rendered URL."""

    ttl_s: Annotated[float, Field(gt=0)] = Field(
        description="How long an answer (a 404 taken as null included) is reused, in seconds."
    )
    max_entries: Annotated[int, Field(ge=1)] = Field(
        default=10_000,
        description="At most this many answers are kept; past it the least recently used goes.",
    )


class LookupConfig(ConfigModel):
    """What is added to the event under ``enrichment.<name>``: an HTTP GET's JSON answer
    (``url``), or a key's value in a table kept in a compacted topic (``table``)."""

    name: Name = Field(description="Where the answer goes: enrichment.<name>.")
    url: str | None = Field(
        default=None,
        description="The URL, a template over event and data (values are percent-encoded); "
        "its host must resolve to a public address unless allow_private is set. Set either "
        "url or table.",
    )
    table: TableConfig | None = Field(
        default=None,
        description="Look the key up in a table kept in a compacted topic instead of calling "
        "a URL: {topic: crm.customers, key: '{{ data.customer_id }}'}. Every worker reads the "
        "whole topic before its first event, then follows it.",
    )
    cache: LookupCacheConfig | None = Field(
        default=None,
        description="Reuse a URL's answers for ttl_s (at most max_entries, LRU); errors are "
        "never cached. Unset: every event calls the URL. HTTP lookups only.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers, sent as written (not templates)."
    )
    timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        default=5.0,
        description="The longest the GET may take, in seconds. A timeout, a connection error "
        "or a 408, 429 or 5xx answer is retried (3 attempts in all), then dead-lettered.",
    )
    on_not_found: Literal["null", "fail"] = Field(
        default="null",
        description="A 404 answer (a table: a key it does not hold) gives null under "
        'enrichment.<name> ("null", quoted in YAML), or dead-letters the event (fail).',
    )
    allow_private: bool = Field(
        default=False,
        description="Let this lookup reach loopback, private and link-local addresses (SSRF "
        "opt-in; worker.allow_private_networks does it for all).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, {"event", "data"})

    @model_validator(mode="after")
    def _one_source(self) -> LookupConfig:
        if (self.url is None) == (self.table is None):
            raise ValueError("set either url (an HTTP lookup) or table (a Kafka table), not both")
        if self.table is not None:
            http_only = ("headers", "timeout_s", "cache", "allow_private")
            given = [f for f in http_only if f in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)}: only for an HTTP lookup (url), not a table")
        return self


class StepConfig(AITaskConfig):
    """One AI step of a multi-step flow: a named AI task whose prompts may also read the
    answers of the steps before it (``{{ steps.classify.category }}``)."""

    name: Name = Field(
        description="The step's name: later steps' prompts and sink templates read its answer "
        "as steps.<name>.<field>."
    )

    @field_validator("prompt", "system")
    @classmethod
    def _prompt(cls, value: str) -> str:
        # Which steps and fields exist is checked across the flow (schemas.config_checks).
        return check_template(value, STEP_ROOTS)


class FlowConfig(ConfigModel):
    """One path through the pipeline: matched events, looked up, asked of a model, delivered."""

    name: Name = Field(
        description="The flow's name: it marks its results, metrics and dead letters, and is "
        "part of each delivery's Idempotency-Key."
    )
    match: MatchConfig = Field(description="Which events the flow takes.")
    enrich: tuple[LookupConfig, ...] = Field(
        default=(),
        description="Lookups (HTTP or table) run concurrently before the model is asked; "
        "empty: the event passes through with an empty enrichment.",
    )
    ai: AITaskConfig | None = Field(
        default=None,
        description="What the model is asked, and the answer's shape: one model call per "
        "event. Set ai, or steps (several calls), or neither (no model call: see output).",
    )
    steps: tuple[StepConfig, ...] = Field(
        default=(),
        description="Several AI tasks asked in order for each event, each named: a step's "
        "prompt may read the earlier steps' answers (steps.<name>.<field>); the result's "
        "output is the last step's answer, and its steps field holds every step's. "
        "Empty: the flow has ai, or no AI step.",
    )
    output: dict[str, Any] | None = Field(
        default=None,
        description="A flow with no AI step (neither ai nor steps): the result's output, a "
        "mapping whose strings are templates over event, data and enrichment (a string that "
        "is one placeholder keeps the value's JSON type). Unset: the output is {}.",
    )
    sinks: tuple[SinkConfig, ...] = Field(
        default=(),
        description="Where each result is delivered; empty: results stay on "
        "<prefix>.results for other consumers.",
    )

    @field_validator("output")
    @classmethod
    def _output(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for template in templates.templates_in(value):
            check_template(template.source, OUTPUT_ROOTS)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> FlowConfig:
        if self.ai is not None and self.steps:
            raise ValueError("set ai (one model call) or steps (several), not both")
        if self.output is not None and (self.ai is not None or self.steps):
            raise ValueError(
                "output: only for a flow with no AI step (the model's answer is the output "
                "of a flow with ai or steps)"
            )
        if any(step.mode == "batch" for step in self.steps):
            raise ValueError(
                "steps: mode batch is for a flow's ai only (a step's prompt needs the answers "
                "before it, and a batch job answers within a day)"
            )
        # Step names used twice, and steps.<name> read before that step runs, are reported
        # at their own lines by schemas.config_checks.
        return self

    @property
    def tasks(self) -> tuple[tuple[str | None, AITaskConfig], ...]:
        """The flow's AI tasks in order, each with its step name (None for ``ai``); empty
        for a flow with no AI step."""
        if self.ai is not None:
            return ((None, self.ai),)
        return tuple((step.name, step) for step in self.steps)

    @property
    def max_concurrency(self) -> int:
        """Events of the flow in a model call at once, at most (its largest step's bound)."""
        return max((task.max_concurrency for _, task in self.tasks), default=NO_AI_CONCURRENCY)

    @property
    def cache(self) -> bool:
        """Does any of its AI tasks use the answer cache?"""
        return any(task.cache for _, task in self.tasks)
