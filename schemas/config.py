"""The models of hookstream's one YAML config file: sources, providers, flows.

Frozen pydantic models. Secrets never appear in the file: a field named ``*_env`` names the
environment variable that holds the secret, and :mod:`schemas.config_loader` resolves it into a
``SecretStr`` so it cannot be printed by accident. Cross-references (a flow's source and
provider) and every template are checked here, so a bad file fails at start, not on the first
event. :mod:`schemas.config_loader` turns the errors into ``file:line: field.path: reason``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas import templates
from streams.errors import TemplateError

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
DEFAULT_FORWARDED_HEADERS = ("user-agent", "content-type", "x-request-id", "traceparent")
_SUPPORTED_OUTPUT_TYPES = {"string", "number", "integer", "boolean", "array", "object"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_template(value: str, allowed_roots: set[str]) -> str:
    try:
        template = templates.parse(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    unknown = template.roots - allowed_roots
    if unknown:
        raise ValueError(
            f"template refers to {sorted(unknown)}; it may use {sorted(allowed_roots)}"
        )
    return value


class KafkaSettings(_Frozen):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")] = "hookstream"
    partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1
    produce_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 5


class GatewaySettings(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 1024 * 1024
    forwarded_headers: tuple[str, ...] = DEFAULT_FORWARDED_HEADERS
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 5

    @field_validator("forwarded_headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        forbidden = {"authorization", "cookie", "proxy-authorization"}
        lowered = tuple(h.lower() for h in value)
        bad = [h for h in lowered if h in forbidden or "signature" in h or "secret" in h]
        if bad:
            raise ValueError(f"headers {bad} may carry credentials and are never forwarded")
        return lowered


class SignatureConfig(_Frozen):
    """How a source signs its webhooks. ``hmac-sha256``: HMAC of ``[timestamp.]body``."""

    scheme: Literal["hmac-sha256", "none"]
    secret_env: str | None = Field(
        default=None, description="Environment variable holding the signing secret."
    )
    header: str = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="Text before the digest, e.g. 'sha256='.")
    timestamp_header: str | None = Field(
        default=None, description="When set, the signed text is '<timestamp>.<body>'."
    )
    tolerance_s: Annotated[int, Field(ge=1, le=86400)] = 300
    secret: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _secret_needed(self) -> SignatureConfig:
        if self.scheme != "none" and not self.secret_env:
            raise ValueError("secret_env is required unless scheme is 'none'")
        return self


class SourceConfig(_Frozen):
    name: Name
    signature: SignatureConfig
    id_header: str | None = Field(default=None, description="Header carrying the webhook id.")
    id_field: str | None = Field(default=None, description="Payload path of the webhook id.")
    type_header: str | None = None
    type_field: str | None = Field(default=None, description="Payload path of the event type.")
    default_type: str = "webhook"
    partition_key: str | None = Field(
        default=None, description="Payload path of the Kafka key (e.g. customer_id)."
    )


class ProviderConfig(_Frozen):
    name: Name
    kind: Literal["openai"] = "openai"
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key_env: str | None = None
    model: str
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    api_key: SecretStr | None = Field(default=None, exclude=True)


class MatchConfig(_Frozen):
    source: Name
    types: tuple[str, ...] = Field(default=(), description="Glob patterns; empty matches all.")

    def matches(self, source: str, event_type: str) -> bool:
        if source != self.source:
            return False
        return not self.types or any(fnmatchcase(event_type, p) for p in self.types)


class LookupConfig(_Frozen):
    """An HTTP GET whose JSON answer is added to the event under ``enrichment.<name>``."""

    name: Name
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    on_not_found: Literal["null", "fail"] = "null"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_template(value, {"event", "data"})


class AITaskConfig(_Frozen):
    provider: Name
    model: str | None = Field(default=None, description="Overrides the provider's model.")
    system: str = ""
    prompt: str
    output: dict[str, Any] = Field(description="JSON Schema (type object) of the answer.")
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] = 8
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] = 512

    @field_validator("prompt", "system")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _check_template(value, {"event", "data", "enrichment"})

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


class SinkConfig(_Frozen):
    """An HTTP call per result: the CRM update, a chat message, any endpoint."""

    name: Name
    kind: Literal["http"] = "http"
    method: Literal["PUT", "POST", "PATCH"] = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    success_codes: tuple[int, ...] = (200, 201, 202, 204)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 5
    api_key_env: str | None = Field(default=None, description="Sent as a Bearer token.")
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_template(value, _SINK_ROOTS)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        for template in templates.templates_in(value):
            _check_template(template.source, _SINK_ROOTS)
        return value


_SINK_ROOTS = {"event", "data", "enrichment", "result", "ai"}


class FlowConfig(_Frozen):
    name: Name
    match: MatchConfig
    enrich: tuple[LookupConfig, ...] = ()
    ai: AITaskConfig
    sinks: tuple[SinkConfig, ...] = ()


class WorkerSettings(_Frozen):
    retry_backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    retry_backoff_max_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    http_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    enrich_concurrency: Annotated[int, Field(ge=1, le=4096)] = 64
    sink_concurrency: Annotated[int, Field(ge=1, le=4096)] = 32
    commit_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class HookstreamConfig(_Frozen):
    version: Literal[1] = 1
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    sources: tuple[SourceConfig, ...]
    providers: tuple[ProviderConfig, ...] = ()
    flows: tuple[FlowConfig, ...] = ()

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)

    def flow(self, name: str) -> FlowConfig:
        return next(f for f in self.flows if f.name == name)

    def flows_for(self, source: str, event_type: str) -> list[FlowConfig]:
        return [f for f in self.flows if f.match.matches(source, event_type)]


def reference_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references, checked on the raw file data so they are reported together with
    field errors: (location, reason) pairs."""
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def names(section: str) -> list[str | None]:
        items = data.get(section)
        if not isinstance(items, list):
            return []
        return [i.get("name") if isinstance(i, dict) else None for i in items]

    for section in ("sources", "providers", "flows"):
        first_index: dict[str, int] = {}
        for index, name in enumerate(names(section)):
            if name is None:
                continue
            if name in first_index:
                problems.append(
                    (
                        (section, index, "name"),
                        f"{name!r} is already the name of {section}[{first_index[name]}]",
                    )
                )
            first_index.setdefault(name, index)
    sources = [n for n in names("sources") if n is not None]
    providers = [n for n in names("providers") if n is not None]
    flows = data.get("flows") if isinstance(data.get("flows"), list) else []
    for i, flow in enumerate(flows or []):
        if not isinstance(flow, dict):
            continue
        match, ai = flow.get("match"), flow.get("ai")
        source = match.get("source") if isinstance(match, dict) else None
        if isinstance(source, str) and source not in sources:
            problems.append(
                (("flows", i, "match", "source"), f"unknown source {source!r} (known: {sources})")
            )
        provider = ai.get("provider") if isinstance(ai, dict) else None
        if isinstance(provider, str) and provider not in providers:
            problems.append(
                (
                    ("flows", i, "ai", "provider"),
                    f"unknown provider {provider!r} (known: {providers})",
                )
            )
    return problems
