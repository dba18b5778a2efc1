"""The ``flows`` block: which events a flow takes, what it looks up, what it asks, where it sends.

Its own module because a flow is the one model that ties the others together (a source by name,
lookups, an AI task, sinks): keeping it apart lets the AI and sink modules stay unaware of each
other, and the root config only lists flows.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.config_ai import AITaskConfig
from schemas.config_base import ConfigModel, Name, check_template
from schemas.config_sinks import SinkConfig


class MatchConfig(ConfigModel):
    """Which events a flow takes: a source, and optionally some of its event types."""

    source: Name = Field(description="The name of the source (in sources) whose events it takes.")
    types: tuple[str, ...] = Field(
        default=(),
        description="Event type glob patterns, e.g. ticket.*; an event matching any of them is "
        "taken. Empty: every type.",
    )

    def matches(self, source: str, event_type: str) -> bool:
        if source != self.source:
            return False
        return not self.types or any(fnmatchcase(event_type, p) for p in self.types)


class LookupConfig(ConfigModel):
    """An HTTP GET whose JSON answer is added to the event under ``enrichment.<name>``."""

    name: Name = Field(description="Where the answer goes: enrichment.<name>.")
    url: str = Field(
        description="The URL, a template over event and data (values are percent-encoded); "
        "its host must resolve to a public address unless allow_private is set."
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
        description='A 404 answer gives null under enrichment.<name> ("null", quoted in '
        "YAML), or dead-letters the event (fail).",
    )
    allow_private: bool = Field(
        default=False,
        description="Let this lookup reach loopback, private and link-local addresses (SSRF "
        "opt-in; worker.allow_private_networks does it for all).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_template(value, {"event", "data"})


class FlowConfig(ConfigModel):
    """One path through the pipeline: matched events, looked up, asked of a model, delivered."""

    name: Name = Field(
        description="The flow's name: it marks its results, metrics and dead letters, and is "
        "part of each delivery's Idempotency-Key."
    )
    match: MatchConfig = Field(description="Which events the flow takes.")
    enrich: tuple[LookupConfig, ...] = Field(
        default=(),
        description="HTTP lookups run concurrently before the model is asked; empty: the "
        "event passes through with an empty enrichment.",
    )
    ai: AITaskConfig = Field(description="What the model is asked, and the answer's shape.")
    sinks: tuple[SinkConfig, ...] = Field(
        default=(),
        description="Where each result is delivered; empty: results stay on "
        "<prefix>.results for other consumers.",
    )
