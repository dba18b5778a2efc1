"""The model calls: the ``providers`` block and a flow's ``ai`` task.

Its own module because it is everything hookstream needs to call a model and nothing else:
where the provider is and how it answers, what it costs, the rate budget and the circuit
breaker that guard it, and the task a flow asks of it (prompt, output schema, fallbacks). The
AI clients, budgets and breakers of :mod:`agents.ai` are built from these models alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.config_base import (
    BASE_URL_PATTERN,
    ConfigModel,
    Name,
    check_secret_source,
    check_template,
)
from schemas.output_schema import schema_problems


class PricingConfig(ConfigModel):
    """What one model costs, in US dollars per million tokens (the unit providers publish)."""

    input_usd_per_mtok: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="US dollars per million prompt (input) tokens, as the provider reports "
        "them; 0 counts them as free.",
    )
    output_usd_per_mtok: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="US dollars per million answer (output) tokens; 0 counts them as free.",
    )
    batch_price_factor: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5,
        description="What a request sent through the provider's batch API (``hookstream replay "
        "--batch``) costs, as a share of the prices above: 0.5, OpenAI's and Anthropic's "
        "published batch discount, unless set.",
    )


class BudgetConfig(ConfigModel):
    """A provider's rate limits, spent by hookstream before the provider has to say 429.

    None means no limit. Tokens are estimated before the call (prompt characters / 4 plus
    ``max_tokens``) and corrected with the usage the provider returns.
    """

    requests_per_minute: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Calls per minute this provider may take; a call waits for room rather "
        "than go over. Unset: no limit.",
    )
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Tokens per minute, estimated before each call (prompt characters / 4 "
        "plus max_tokens) and corrected with the usage the provider returns; a call waits "
        "for room. Unset: no limit.",
    )


class BreakerConfig(ConfigModel):
    """Circuit breaker per provider: after ``failure_threshold`` consecutive failures (5xx,
    timeouts, connection errors) calls skip the provider for ``open_s``, then one trial call
    decides whether it closes again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5,
        description="Consecutive failures (5xx, timeouts, connection errors) that open the "
        "breaker; a 429 or another 4xx does not count, a success resets the count.",
    )
    open_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="How long an open breaker skips the provider, in seconds (flows go to "
        "their fallbacks); then one trial call closes it again or opens it for another "
        "open_s.",
    )


class ProviderConfig(ConfigModel):
    """One AI model endpoint: where it is, how to call it, and what guards it."""

    name: Name = Field(
        description="The name flows use for it, in ai.provider and ai.fallbacks[].provider."
    )
    kind: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="openai: POST {base_url}/chat/completions (OpenAI or any compatible "
        "server: vLLM, Ollama, LiteLLM); anthropic: POST {base_url}/messages.",
    )
    base_url: Annotated[str, Field(pattern=BASE_URL_PATTERN)] = Field(
        description="The API's root, to which the kind's path is appended, e.g. "
        "https://api.openai.com/v1 or https://api.anthropic.com/v1."
    )
    api_key_env: str | None = Field(
        default=None,
        description="The environment variable holding the API key, sent as Authorization: "
        "Bearer (openai) or x-api-key (anthropic). Unset: no key is sent (local servers).",
    )
    api_key_file: str | None = Field(
        default=None,
        description="Instead of api_key_env: a file holding the API key (a mounted Kubernetes "
        "or Docker secret), relative to the config file's folder unless absolute; one "
        "trailing line break is ignored.",
    )
    model: str = Field(
        description="The model asked, unless a flow's ai.model or a fallback's model names another."
    )
    timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="The longest one call may take, in seconds; a call that runs out is a "
        "failure: retried, and counted by the breaker.",
    )
    structured_output: Literal["json_schema", "json_object", "instruction"] = Field(
        default="json_schema",
        description="openai kind: response_format json_schema, JSON mode, or the schema in the "
        "system prompt (for servers without either). anthropic: always a forced tool call.",
    )
    api: Literal["chat_completions", "responses"] = Field(
        default="chat_completions",
        description="openai kind: which OpenAI API is called. chat_completions: POST "
        "{base_url}/chat/completions; responses: the Responses API, POST {base_url}/responses "
        "(input, instructions, text.format). anthropic kind: chat_completions only (the "
        "Messages API).",
    )
    background: bool = Field(
        default=False,
        description="api responses only: create each response with background: true, record "
        "its id on the worker's state topic (acks=all) before waiting, then poll GET "
        "{base_url}/responses/{id} until it is done. A worker killed while it waits is not "
        "paid twice: whoever redoes the event fetches the answer by its id.",
    )
    background_poll_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.5,
        description="background: the wait before the first poll of a response, in seconds; "
        "each next wait is 1.5 times longer, up to background_poll_max_s.",
    )
    background_poll_max_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=5.0,
        description="background: the longest wait between two polls of a response, in seconds.",
    )
    background_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=600.0,
        description="background: how long one response may stay queued or in progress, in "
        "seconds; then it is cancelled (POST {base_url}/responses/{id}/cancel) and the call "
        "counts as failed (retried as a new response).",
    )
    batch_timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        default=None,
        description="The longest one request to the provider's batch API may take, in "
        "seconds (replay --batch, hookstream batcher): a file's upload or download, a job's "
        "creation, poll or listing. Unset: max(timeout_s, 120) for a file, max(timeout_s, 60) "
        "for the others. A batcher that takes over waits one of each before it looks for its "
        "predecessor's last job by listing, and a job is not created later than one file "
        "timeout after its intent was journaled.",
    )
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig,
        description="The provider's rate limits, spent here before the provider says 429 "
        "(default: none).",
    )
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig,
        description="The circuit breaker that stops calling the provider while it fails.",
    )
    prices: dict[str, PricingConfig] = Field(
        default_factory=dict,
        description="What each model costs, by model name, for the results' cost_usd and the "
        "cost metric; a model not listed costs 0.",
    )
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_api_key_source(self) -> Self:
        check_secret_source(self, "api_key", required=False)
        return self

    @model_validator(mode="after")
    def _api_fits_kind(self) -> Self:
        if self.api == "responses" and self.kind != "openai":
            raise ValueError(
                f"api: responses is OpenAI's Responses API; provider {self.name} has kind "
                f"{self.kind} (use kind: openai, or drop api)"
            )
        if self.background and self.api != "responses":
            raise ValueError(
                f"background: true needs api: responses (provider {self.name} calls "
                f"{self.api}, which has no background mode)"
            )
        if self.background_poll_max_s < self.background_poll_s:
            raise ValueError(
                f"background_poll_max_s ({self.background_poll_max_s:g}) is shorter than "
                f"background_poll_s ({self.background_poll_s:g})"
            )
        return self


class FallbackConfig(ConfigModel):
    """Another provider (and model) a flow falls back to when the one before it is open or
    exhausted."""

    provider: Name = Field(description="The name of a provider in providers.")
    model: str | None = Field(
        default=None, description="The model to ask; unset: the provider's model."
    )


class BatchSettings(ConfigModel):
    """How ``hookstream batcher`` groups the requests of ``mode: batch`` flows into jobs."""

    max_wait_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=60.0,
        description="The longest a request waits on <prefix>.ai-batch before the batcher "
        "submits a job with it (fewer than max_requests), in seconds.",
    )
    max_requests: Annotated[int, Field(ge=1, le=50_000)] = Field(
        default=10_000,
        description="Requests per job at most; this many pending requests make a job at once.",
    )
    poll_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="How often the batcher asks the provider whether a job has ended, in seconds.",
    )


class AITaskConfig(ConfigModel):
    """What a flow asks a model for each event, and the shape the answer must have."""

    provider: Name = Field(description="The name of the provider (in providers) asked first.")
    model: str | None = Field(
        default=None, description="The model to ask; unset: the provider's model."
    )
    system: str = Field(
        default="",
        description="The system prompt, a template over event, data (the webhook body) and "
        "enrichment; empty: none of your own.",
    )
    prompt: str = Field(
        description="The user prompt, a template over event, data (the webhook body) and "
        "enrichment."
    )
    output: dict[str, Any] = Field(
        description="The JSON Schema (draft 2020-12) the answer must fit; its top level is "
        "type: object. Every keyword is enforced, nested ones too (properties, required, "
        "items, minimum/maximum, pattern, enum, const, additionalProperties, $defs/$ref...); "
        "format is an annotation only. An answer that does not fit is asked again once with "
        "every error, then dead-lettered with all of them. Sink templates reading "
        "result.<field> are checked against it at load."
    )
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=8,
        description="Model calls in flight for this flow in one worker process (events with "
        "the same key one after the other). The worker admits at most four times that many "
        "events, then stops reading from Kafka.",
    )
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3,
        description="Calls to one provider per event, retries included (backoff from "
        "worker.retry_backoff_s; a 429 is not counted: the call waits for the rate limit's "
        "reset and goes again); then the next fallback. When every provider of the flow is "
        "unavailable the flow pauses instead (see max_outage_s); an event a provider keeps "
        "failing while it answers others goes to the DLQ.",
    )
    max_outage_s: Annotated[float, Field(gt=0, le=604_800)] | None = Field(
        default=None,
        description="How long the flow's events wait, paused, while its provider and all "
        "its fallbacks are unavailable (5xx, timeouts, connection errors, open breakers), "
        "in seconds; after that they go to the DLQ (OutageTooLong) until a probe is "
        "answered. Unset: they wait for the provider, however long.",
    )
    temperature: Annotated[float, Field(ge=0, le=2)] = Field(
        default=0.0,
        description="The sampling temperature sent to the model: 0 is the most "
        "deterministic, higher varies more.",
    )
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] = Field(
        default=512,
        description="The most tokens the answer may have, sent to the model; also counted "
        "in the provider's tokens_per_minute estimate.",
    )
    fallbacks: tuple[FallbackConfig, ...] = Field(
        default=(),
        description="Providers tried in order when the one before is open or its attempts "
        "are exhausted; empty: none.",
    )
    cache: bool = Field(
        default=True,
        description="Reuse a model's answer to an identical request within "
        "worker.ai_cache.ttl_s instead of calling again.",
    )
    mode: Literal["sync", "batch"] = Field(
        default="sync",
        description="sync: the worker calls the model for each event. batch (work that can "
        "wait, at the provider's batch price): the worker writes the rendered request to "
        "<prefix>.ai-batch and moves on; `hookstream batcher` submits them in jobs to the "
        "provider's batch API (worker.batch) and writes the results. Only for a flow's ai "
        "(not steps); the provider is asked, not its fallbacks.",
    )

    @field_validator("prompt", "system")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return check_template(value, {"event", "data", "enrichment"})

    @field_validator("output")
    @classmethod
    def _output(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = schema_problems(value)
        if problems:
            # Raised as a ValidationError of its own, each problem at its path inside output,
            # so the loader names the line of ``maximum: "ten"`` rather than of ``output:``.
            raise ValidationError.from_exception_data(
                "output",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("output_schema", "{reason}", {"reason": reason}),
                        loc=location,
                        input=value,
                    )
                    for location, reason in problems
                ],
            )
        return value
