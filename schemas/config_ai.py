"""The model calls: the ``providers`` block and a flow's ``ai`` task.

Its own module because it is everything hookstream needs to call a model and nothing else:
where the provider is and how it answers, what it costs, the rate budget and the circuit
breaker that guard it, and the task a flow asks of it (prompt, output schema, fallbacks). The
AI clients, budgets and breakers of :mod:`agents.ai` are built from these models alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator

from schemas.config_base import BASE_URL_PATTERN, ConfigModel, Name, check_template

_SUPPORTED_OUTPUT_TYPES = {"string", "number", "integer", "boolean", "array", "object"}


class PricingConfig(ConfigModel):
    """What one model costs, in US dollars per million tokens (the unit providers publish)."""

    input_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0


class BudgetConfig(ConfigModel):
    """A provider's rate limits, spent by hookstream before the provider has to say 429.

    None means no limit. Tokens are estimated before the call (prompt characters / 4 plus
    ``max_tokens``) and corrected with the usage the provider returns.
    """

    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None


class BreakerConfig(ConfigModel):
    """Circuit breaker per provider: after ``failure_threshold`` consecutive failures (5xx,
    timeouts, connection errors) calls skip the provider for ``open_s``, then one trial call
    decides whether it closes again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    open_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ProviderConfig(ConfigModel):
    name: Name
    kind: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="openai: /chat/completions (any compatible server); anthropic: /v1/messages.",
    )
    base_url: Annotated[str, Field(pattern=BASE_URL_PATTERN)]
    api_key_env: str | None = None
    model: str
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    structured_output: Literal["json_schema", "json_object", "instruction"] = Field(
        default="json_schema",
        description="openai kind: response_format json_schema, JSON mode, or the schema in the "
        "system prompt (for servers without either). anthropic: always a forced tool call.",
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    prices: dict[str, PricingConfig] = Field(
        default_factory=dict, description="Per model name; a model not listed costs 0."
    )
    api_key: SecretStr | None = Field(default=None, exclude=True)


class FallbackConfig(ConfigModel):
    """Another provider (and model) a flow falls back to when the one before it is open or
    exhausted."""

    provider: Name
    model: str | None = Field(default=None, description="Defaults to the provider's model.")


class AITaskConfig(ConfigModel):
    provider: Name
    model: str | None = Field(default=None, description="Overrides the provider's model.")
    system: str = ""
    prompt: str
    output: dict[str, Any] = Field(description="JSON Schema (type object) of the answer.")
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] = 8
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] = 512
    fallbacks: tuple[FallbackConfig, ...] = Field(
        default=(), description="Tried in order when the provider before is open or exhausted."
    )
    cache: bool = Field(default=True, description="Reuse answers to identical requests.")

    @field_validator("prompt", "system")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return check_template(value, {"event", "data", "enrichment"})

    @field_validator("output")
    @classmethod
    def _output(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object" or not isinstance(value.get("properties"), dict):
            raise ValueError("must be a JSON Schema with type: object and properties")
        for name, prop in value["properties"].items():
            kind = prop.get("type") if isinstance(prop, dict) else None
            if kind not in _SUPPORTED_OUTPUT_TYPES:
                raise ValueError(
                    f"property {name!r} needs a type among {sorted(_SUPPORTED_OUTPUT_TYPES)}"
                )
        required = value.get("required", [])
        missing = [r for r in required if r not in value["properties"]]
        if missing:
            raise ValueError(f"required names unknown properties {missing}")
        return value
