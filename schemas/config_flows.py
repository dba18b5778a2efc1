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
    source: Name
    types: tuple[str, ...] = Field(default=(), description="Glob patterns; empty matches all.")

    def matches(self, source: str, event_type: str) -> bool:
        if source != self.source:
            return False
        return not self.types or any(fnmatchcase(event_type, p) for p in self.types)


class LookupConfig(ConfigModel):
    """An HTTP GET whose JSON answer is added to the event under ``enrichment.<name>``."""

    name: Name
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    on_not_found: Literal["null", "fail"] = "null"
    allow_private: bool = Field(
        default=False, description="Allow a loopback/private/link-local address (SSRF opt-in)."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_template(value, {"event", "data"})


class FlowConfig(ConfigModel):
    name: Name
    match: MatchConfig
    enrich: tuple[LookupConfig, ...] = ()
    ai: AITaskConfig
    sinks: tuple[SinkConfig, ...] = ()
