"""The models of hookstream's one YAML config file: sources, providers, flows.

Frozen pydantic models. Secrets never appear in the file: a field named ``*_env`` names the
environment variable that holds the secret, and :mod:`schemas.config_loader` resolves it into a
``SecretStr`` so it cannot be printed by accident. Cross-references (a flow's source and
provider) and every template are checked here, so a bad file fails at start, not on the first
event. :mod:`schemas.config_loader` turns the errors into ``file:line: field.path: reason``.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)

from schemas import templates
from schemas.config_messages import unknown_choice
from schemas.errors import TemplateError

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TOPIC_PREFIX = r"^[A-Za-z0-9._-]{1,100}$"
_BASE_URL = r"^https?://"
_COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_TABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"
# What each pattern asks for, in words: the config errors show these instead of the regex.
PATTERN_HINTS = {
    _NAME: "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
    _TOPIC_PREFIX: "must be 1 to 100 letters, digits, '.', '_' or '-'",
    _BASE_URL: "must start with http:// or https://",
    _COLUMN: "must be a column name: a letter or '_', then letters, digits or '_' (at most 63)",
    _TABLE: "must be a table name, optionally schema.table: each a letter or '_', then "
    "letters, digits or '_' (at most 63)",
}
Name = Annotated[str, Field(pattern=_NAME)]
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
    topic_prefix: Annotated[str, Field(pattern=_TOPIC_PREFIX)] = "hookstream"
    partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1
    produce_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 5


class GatewaySettings(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 1024 * 1024
    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0,
        description="How long a sender may take to send a body after its headers; then 408.",
    )
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=75.0,
        description="A connection with no complete request for this long is closed (idle "
        "keep-alive connections, and senders that never finish their headers).",
    )
    forwarded_headers: tuple[str, ...] = DEFAULT_FORWARDED_HEADERS
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 5
    max_in_flight_writes: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=2048,
        description="Kafka writes waiting for their ack; beyond it the gateway answers 503 at "
        "once instead of queueing without bound.",
    )
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="On SIGTERM: how long in-flight requests may take to finish."
    )
    readiness_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    client_ip_header: str | None = Field(
        default=None,
        description="Header a trusted proxy puts the client address in, e.g. X-Forwarded-For.",
    )
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        default=(), description="Peers (CIDR) whose client_ip_header is believed."
    )
    tls_cert_file: str | None = Field(default=None, description="PEM certificate chain.")
    tls_key_file: str | None = Field(default=None, description="PEM private key.")
    reuse_port: bool = Field(
        default=False,
        description="SO_REUSEPORT: several gateway processes on one host share the port and "
        "the kernel spreads connections among them (one process uses one core).",
    )

    @field_validator("forwarded_headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        forbidden = {"authorization", "cookie", "proxy-authorization"}
        lowered = tuple(h.lower() for h in value)
        bad = [h for h in lowered if h in forbidden or "signature" in h or "secret" in h]
        if bad:
            raise ValueError(f"headers {bad} may carry credentials and are never forwarded")
        return lowered

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        return self


SignatureScheme = Literal["standard-webhooks", "stripe", "github", "hmac-sha256", "none"]
# Fields only the generic scheme reads; the named schemes fix their headers and encodings.
_GENERIC_ONLY_FIELDS = ("header", "encoding", "prefix", "timestamp_header")
# Commas or line breaks, not spaces: GitHub and generic senders let people type secrets with
# spaces in them (GitHub's own example is "It's a Secret to Everybody").
_SECRET_SEPARATORS = re.compile(r"[,\r\n]")


class SignatureConfig(_Frozen):
    """How a source signs its webhooks.

    ``standard-webhooks`` (Svix and the Standard Webhooks spec), ``stripe``, ``github`` fix their
    headers; ``hmac-sha256`` is the generic HMAC of ``[timestamp.]body`` with a configurable
    header and encoding; ``none`` accepts unsigned webhooks and must be written explicitly.
    """

    scheme: SignatureScheme
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the signing secret; several secrets "
        "separated by commas or line breaks are all accepted (rotation).",
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
        if self.scheme not in ("hmac-sha256", "none"):
            fixed = [f for f in _GENERIC_ONLY_FIELDS if f in self.model_fields_set]
            if fixed:
                raise ValueError(
                    f"{fixed} only apply to scheme hmac-sha256; {self.scheme} fixes its headers"
                )
        if self.scheme == "standard-webhooks":
            for secret in self.secrets:
                try:
                    base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                except ValueError:
                    # Never echo the value: say which variable holds it.
                    raise ValueError(
                        f"the secret in {self.secret_env} must be 'whsec_' followed by base64"
                    ) from None
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every active secret: the variable may hold several, separated by commas or line
        breaks (surrounding blanks are trimmed)."""
        return () if self.secret is None else split_secrets(self.secret.get_secret_value())


def split_secrets(text: str) -> tuple[str, ...]:
    """The secrets of one variable's value (rotation: several, comma- or line-separated)."""
    return tuple(s for s in (part.strip() for part in _SECRET_SEPARATORS.split(text)) if s)


class RateLimitConfig(_Frozen):
    """A token bucket per source (per gateway process): ``burst`` requests at once, refilled at
    ``requests_per_s``. Beyond it: 429 with Retry-After."""

    requests_per_s: Annotated[float, Field(gt=0, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class SourceConfig(_Frozen):
    name: Name
    signature: SignatureConfig
    id_header: str | None = Field(
        default=None,
        description="Header carrying the webhook id (default: the scheme's delivery id).",
    )
    id_field: str | None = Field(default=None, description="Payload path of the webhook id.")
    type_header: str | None = None
    type_field: str | None = Field(default=None, description="Payload path of the event type.")
    default_type: str = "webhook"
    partition_key: str | None = Field(
        default=None, description="Payload path of the Kafka key (e.g. customer_id)."
    )
    rate_limit: RateLimitConfig | None = None
    allow_ips: tuple[IPvAnyNetwork, ...] = Field(
        default=(), description="When set, only these client networks (CIDR) may post."
    )


class PricingConfig(_Frozen):
    """What one model costs, in US dollars per million tokens (the unit providers publish)."""

    input_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_usd_per_mtok: Annotated[float, Field(ge=0)] = 0.0


class BudgetConfig(_Frozen):
    """A provider's rate limits, spent by hookstream before the provider has to say 429.

    None means no limit. Tokens are estimated before the call (prompt characters / 4 plus
    ``max_tokens``) and corrected with the usage the provider returns.
    """

    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None


class BreakerConfig(_Frozen):
    """Circuit breaker per provider: after ``failure_threshold`` consecutive failures (5xx,
    timeouts, connection errors) calls skip the provider for ``open_s``, then one trial call
    decides whether it closes again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    open_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ProviderConfig(_Frozen):
    name: Name
    kind: Literal["openai", "anthropic"] = Field(
        default="openai",
        description="openai: /chat/completions (any compatible server); anthropic: /v1/messages.",
    )
    base_url: Annotated[str, Field(pattern=_BASE_URL)]
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


class FallbackConfig(_Frozen):
    """Another provider (and model) a flow falls back to when the one before it is open or
    exhausted."""

    provider: Name
    model: str | None = Field(default=None, description="Defaults to the provider's model.")


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
    allow_private: bool = Field(
        default=False, description="Allow a loopback/private/link-local address (SSRF opt-in)."
    )

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
    fallbacks: tuple[FallbackConfig, ...] = Field(
        default=(), description="Tried in order when the provider before is open or exhausted."
    )
    cache: bool = Field(default=True, description="Reuse answers to identical requests.")

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


class _SinkBase(_Frozen):
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
        return _check_template(value, _SINK_ROOTS)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        for template in templates.templates_in(value):
            _check_template(template.source, _SINK_ROOTS)
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
        return _check_template(value, _SINK_ROOTS)


class PostgresSinkConfig(_SinkBase):
    """An upsert per result into one table: ``INSERT … ON CONFLICT (key) DO UPDATE``, batched."""

    kind: Literal["postgres"]
    dsn_env: str = Field(description="Environment variable holding the libpq DSN/URL.")
    table: Annotated[str, Field(pattern=_TABLE, description="Table, optionally schema.table.")]
    key: tuple[Annotated[str, Field(pattern=_COLUMN)], ...] = Field(
        min_length=1, description="Columns of the table's primary key or unique constraint."
    )
    columns: dict[Annotated[str, Field(pattern=_COLUMN)], Any] = Field(
        description="Column name → value template; PostgreSQL casts each JSON value."
    )
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 20
    dsn: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, Any]) -> dict[str, Any]:
        for template in templates.templates_in(value):
            _check_template(template.source, _SINK_ROOTS)
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
_SINK_ROOTS = {"event", "data", "enrichment", "result", "ai"}


class FlowConfig(_Frozen):
    name: Name
    match: MatchConfig
    enrich: tuple[LookupConfig, ...] = ()
    ai: AITaskConfig
    sinks: tuple[SinkConfig, ...] = ()


class DedupeConfig(_Frozen):
    """How long the worker remembers an event id, so a sender's retry is not processed twice."""

    ttl_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    cleanup_interval_s: Annotated[float, Field(gt=0)] = 300.0


class CacheConfig(_Frozen):
    """The AI answer cache: identical (provider, model, rendered prompt, parameters) within
    ``ttl_s`` reuse the answer instead of calling the model."""

    ttl_s: Annotated[float, Field(gt=0)] = 86400.0
    cleanup_interval_s: Annotated[float, Field(gt=0)] = 300.0


class WorkerSettings(_Frozen):
    retry_backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    retry_backoff_max_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    http_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    enrich_concurrency: Annotated[int, Field(ge=1, le=4096)] = 64
    sink_concurrency: Annotated[int, Field(ge=1, le=4096)] = 32
    commit_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = Field(
        default=10.0,
        description="How long Kafka waits for a silent worker before giving its partitions to "
        "the others: the failover time after a crash (Faust's default is 60 s).",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let sinks and lookups call loopback, private and link-local addresses "
        "(refused by default: a templated URL must not reach internal services).",
    )
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    ai_cache: CacheConfig = Field(default_factory=CacheConfig)


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
                (("flows", i, "match", "source"), unknown_choice("source", source, sources))
            )
        provider = ai.get("provider") if isinstance(ai, dict) else None
        if isinstance(provider, str) and provider not in providers:
            problems.append(
                (
                    ("flows", i, "ai", "provider"),
                    unknown_choice("provider", provider, providers),
                )
            )
        fallbacks = ai.get("fallbacks") if isinstance(ai, dict) else None
        for j, fallback in enumerate(fallbacks if isinstance(fallbacks, list) else []):
            name = fallback.get("provider") if isinstance(fallback, dict) else None
            if isinstance(name, str) and name not in providers:
                problems.append(
                    (
                        ("flows", i, "ai", "fallbacks", j, "provider"),
                        unknown_choice("provider", name, providers),
                    )
                )
    return problems


def _is_local_host(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hosts(bootstrap_servers: str) -> list[str]:
    """The host of each ``host:port`` (IPv6 in brackets) of a bootstrap list."""
    hosts = []
    for server in filter(None, (s.strip() for s in bootstrap_servers.split(","))):
        host = server.rsplit(":", 1)[0] if server.count(":") == 1 or "]:" in server else server
        hosts.append(host)
    return hosts


def production_warnings(config: HookstreamConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Settings that are right on a laptop and wrong in production, as (location, reason):
    ``hookstream config check`` prints them and still accepts the file, because the same file
    serves both and only its reader knows which one this is."""
    warnings: list[tuple[tuple[str | int, ...], str]] = []
    remote = [h for h in _hosts(config.kafka.bootstrap_servers) if not _is_local_host(h)]
    if config.kafka.replication_factor == 1 and remote:
        warnings.append(
            (
                ("kafka", "replication_factor"),
                f"1 copy of each event on a broker that is not local ({remote[0]}): losing "
                "that broker loses webhooks already answered 2xx; use 3 in production",
            )
        )
    if not _is_local_host(config.gateway.host):
        for index, source in enumerate(config.sources):
            if source.signature.scheme == "none":
                warnings.append(
                    (
                        ("sources", index, "signature", "scheme"),
                        f"source {source.name!r} accepts unsigned webhooks on "
                        f"{config.gateway.host}: anyone who reaches the gateway can post "
                        "events; sign them in production",
                    )
                )
    if config.worker.allow_private_networks:
        warnings.append(
            (
                ("worker", "allow_private_networks"),
                "every sink and lookup may call loopback and private addresses, so a templated "
                "URL can reach internal services (SSRF); meant for local simulators, use "
                "allow_private on the single sink or lookup that needs it in production",
            )
        )
    return warnings
