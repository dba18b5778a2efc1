"""The root of hookstream's one YAML config file, and the settings of its processes.

Frozen pydantic models. Secrets never appear in the file: a field named ``*_env`` names the
environment variable that holds the secret, and :mod:`schemas.config_loader` resolves it into a
``SecretStr`` so it cannot be printed by accident. Every template is checked when the file is
loaded, so a bad file fails at start, not on the first event; :mod:`schemas.config_loader` turns
the errors into ``file:line: field.path: reason``.

This module holds :class:`HookstreamConfig` (the file) and the blocks that configure hookstream's
own processes: ``kafka``, ``gateway``, ``worker``. The blocks a user writes per integration have
their own modules: :mod:`schemas.config_sources`, :mod:`schemas.config_ai`,
:mod:`schemas.config_flows` and :mod:`schemas.config_sinks`, on the shared base of
:mod:`schemas.config_base`; checks across the whole file are in :mod:`schemas.config_checks`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator

from schemas.config_ai import ProviderConfig
from schemas.config_base import TOPIC_PREFIX_PATTERN, ConfigModel
from schemas.config_flows import FlowConfig
from schemas.config_sources import SourceConfig

DEFAULT_FORWARDED_HEADERS = ("user-agent", "content-type", "x-request-id", "traceparent")


class KafkaSettings(ConfigModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: Annotated[str, Field(pattern=TOPIC_PREFIX_PATTERN)] = "hookstream"
    partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1
    produce_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 5


class GatewaySettings(ConfigModel):
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


class DedupeConfig(ConfigModel):
    """How long the worker remembers an event id, so a sender's retry is not processed twice."""

    ttl_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    cleanup_interval_s: Annotated[float, Field(gt=0)] = 300.0


class CacheConfig(ConfigModel):
    """The AI answer cache: identical (provider, model, rendered prompt, parameters) within
    ``ttl_s`` reuse the answer instead of calling the model."""

    ttl_s: Annotated[float, Field(gt=0)] = 86400.0
    cleanup_interval_s: Annotated[float, Field(gt=0)] = 300.0


class WorkerSettings(ConfigModel):
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


class HookstreamConfig(ConfigModel):
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
