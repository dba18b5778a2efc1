"""The root of hookstream's one YAML config file, and the settings of its processes.

Frozen pydantic models. Secrets never appear in the file: a field named ``*_env`` names the
environment variable that holds the secret, and :mod:`schemas.config_loader` resolves it into a
``SecretStr`` so it cannot be printed by accident. Every template is checked when the file is
loaded, so a bad file fails at start, not on the first event; :mod:`schemas.config_loader` turns
the errors into ``file:line: field.path: reason``.

This module holds :class:`HookstreamConfig` (the file) and the blocks that configure hookstream's
own processes: ``kafka`` (with :mod:`schemas.config_kafka_security`), ``gateway``, ``worker``.
The blocks a user writes per integration have
their own modules: :mod:`schemas.config_sources`, :mod:`schemas.config_ai`,
:mod:`schemas.config_flows` and :mod:`schemas.config_sinks`, on the shared base of
:mod:`schemas.config_base`; checks across the whole file are in :mod:`schemas.config_checks`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, ValidationInfo, field_validator, model_validator

from schemas.config_ai import BatchSettings, ProviderConfig
from schemas.config_base import TOPIC_PREFIX_PATTERN, ConfigModel
from schemas.config_flows import FlowConfig
from schemas.config_kafka_security import _KafkaSecurity
from schemas.config_sources import SourceConfig

DEFAULT_FORWARDED_HEADERS = ("user-agent", "content-type", "x-request-id", "traceparent")


class KafkaSettings(_KafkaSecurity):
    """The Kafka connection (its TLS and SASL fields come from _KafkaSecurity) and the
    topics hookstream creates."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="The Kafka brokers to connect to, as comma-separated host:port pairs. "
        "The environment variable KAFKA_BOOTSTRAP_SERVERS, when set, replaces this value.",
    )
    topic_prefix: Annotated[str, Field(pattern=TOPIC_PREFIX_PATTERN)] = Field(
        default="hookstream",
        description="The start of every topic name (<prefix>.events, .enriched, .results, "
        ".dlq, .receipts and the worker's memories) and of the consumer groups "
        "(<prefix>-worker, <prefix>-sinks): deployments with different prefixes can share "
        "one cluster without seeing each other.",
    )
    partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=8,
        description="Partitions of each topic hookstream creates (a topic that already exists "
        "keeps its own). Events are spread over them by key, and each partition is handled "
        "by one worker at a time, so this bounds how many workers share the load.",
    )
    replication_factor: Annotated[int, Field(ge=1, le=16)] | None = Field(
        default=None,
        description="Copies of each partition of the topics hookstream creates (its own and "
        "the worker's); it cannot exceed the number of brokers (the broker refuses to create "
        "the topics). Empty (null, the default) means automatic: min(3, brokers in the "
        "cluster when the topics are created), so 1 on a local broker and 3 on a cluster. "
        "config check warns about 1 on a remote broker.",
    )
    min_insync_replicas: Annotated[int, Field(ge=1, le=16)] | None = Field(
        default=None,
        description="min.insync.replicas of the topics hookstream creates: how many copies "
        "must have a write before Kafka acknowledges it (hookstream writes with acks=all). "
        "Empty (null, the default) means 2 when the replication factor is 3 or more (one "
        "broker may fail without refusing writes or losing an acknowledged one) and the "
        "broker's own default otherwise. At most the replication factor.",
    )
    produce_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0,
        description="How long a write may wait for Kafka's acknowledgement, in seconds (also "
        "the producer's request timeout). Then the gateway answers 503 broker_unavailable; "
        "the write may still land later, and the event id makes the duplicate harmless.",
    )
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0,
        description="How long the producer waits for more records to send in one batch, in "
        "milliseconds (Kafka's linger.ms): 0 sends at once (records written while a request "
        "is in flight still go together in the next one); more means fewer, larger "
        "requests under load at the cost of up to that much latency per write.",
    )

    @field_validator("min_insync_replicas")
    @classmethod
    def _insync_within_copies(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Above the copies, every acks=all write would be refused (NotEnoughReplicas).
        copies = info.data.get("replication_factor")
        if value is not None and copies is not None and value > copies:
            raise ValueError(
                f"{value} is more than kafka.replication_factor ({copies}): every write "
                "would be refused; at most the replication factor"
            )
        return value


class GatewaySettings(ConfigModel):
    host: str = Field(
        default="127.0.0.1",
        description="The address the gateway listens on: 127.0.0.1 takes local connections "
        "only, 0.0.0.0 every IPv4 interface. On an address that is not local, config check "
        "warns about sources that accept unsigned webhooks.",
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8080,
        description="The TCP port the gateway listens on (`hookstream gateway --port` "
        "overrides it); 0 lets the system pick a free port.",
    )
    max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024,
        description="The largest webhook body accepted, in bytes (default 1 MiB), held both "
        "on the bytes received and on the body once unpacked (gzip, deflate); a larger one "
        "gets 413 payload_too_large.",
    )
    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0,
        description="How long a sender may take to send a body after its headers; then 408.",
    )
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=75.0,
        description="A connection with no complete request for this long is closed (idle "
        "keep-alive connections, and senders that never finish their headers).",
    )
    forwarded_headers: tuple[str, ...] = Field(
        default=DEFAULT_FORWARDED_HEADERS,
        description="Request headers copied into each event's webhookheaders (names are "
        "lower-cased; a header the request lacks is left out). Headers that may carry "
        "credentials (authorization, cookie, proxy-authorization, any name containing "
        "'signature' or 'secret') are refused.",
    )
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5,
        description="The whole seconds sent in Retry-After with every 503 (broker_unavailable, "
        "overloaded, and /readyz's not_ready). A 429 of a rate limit sends its own: the "
        "seconds until the bucket has a token again.",
    )
    max_in_flight_writes: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=2048,
        description="Kafka writes waiting for their ack; beyond it the gateway answers 503 at "
        "once instead of queueing without bound.",
    )
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="On SIGTERM: how long in-flight requests may take to finish."
    )
    readiness_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0,
        description="How long GET /readyz waits for Kafka to answer a metadata request, in "
        "seconds, before it answers 503 not_ready.",
    )
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
    log_accepted: Literal["info", "debug", "off"] = Field(
        default="debug",
        description="The level of the one line logged per accepted webhook (source, event "
        "id, trace id, partition, offset). debug by default: written only with --loglevel "
        "debug, because at the default info a gateway taking 20,000 webhooks/s would write "
        "20,000 lines a second, and a JSON line per webhook cost 11 µs of CPU per request "
        "(0.86x the req/s, bench/results/gateway_logs.md); info (with "
        "log_accepted_sample_rate to thin them) for an audit trail in the log; off for none.",
    )
    log_accepted_sample_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0,
        description="The share of accepted webhooks logged when log_accepted's level is on: "
        "1 logs each one, 0.01 about one in a hundred (chosen at random).",
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

    ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=7 * 86400.0,
        description="How long an event id is remembered, in seconds (default 7 days): a "
        "sender's retry that arrives later than this is processed again. Also the retention "
        "of the <prefix>.dedupe topic that holds the ids (set when it is created).",
    )
    cleanup_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="Seconds between the sweeps that drop expired ids from each worker's "
        "memory; an expired id is ignored before its sweep anyway.",
    )


class CacheConfig(ConfigModel):
    """The AI answer cache: identical (provider, model, rendered prompt, parameters) within
    ``ttl_s`` reuse the answer instead of calling the model."""

    ttl_s: Annotated[float, Field(gt=0)] = Field(
        default=86400.0,
        description="How long a model's answer is reused for an identical request, in "
        "seconds (default 1 day). Also the retention of the <prefix>.ai-cache topic (set "
        "when it is created).",
    )
    cleanup_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="Seconds between the sweeps that drop expired answers from each worker's "
        "memory; an expired answer is not reused before its sweep anyway.",
    )


class WorkerSettings(ConfigModel):
    retry_backoff_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=0.5,
        description="The first pause before retrying a lookup, a model call or a sink "
        "delivery, in seconds; it doubles with each attempt (with full jitter) up to "
        "retry_backoff_max_s. A server's Retry-After is used instead when it sends one.",
    )
    retry_backoff_max_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=30.0,
        description="The longest pause between two tries, in seconds: it caps the doubling "
        "backoff, a server's Retry-After, and the wait between a paused sink's probes.",
    )
    http_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=5.0,
        description="The connect timeout, in seconds, of the HTTP client sessions that "
        "lookups, model calls and the http and slack sinks share; each call's whole time "
        "is bounded by its own timeout_s.",
    )
    enrich_concurrency: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=64,
        description="Events the enrich agent handles at once in one worker process (events "
        "with the same key one after the other); at the bound it stops reading from Kafka.",
    )
    sink_concurrency: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=32,
        description="Results each sink agent handles at once in one process (results with "
        "the same key one after the other); at the bound it stops reading from Kafka.",
    )
    commit_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0,
        description="How often the worker commits its consumer offsets, in seconds (Faust's "
        "broker_commit_interval). Only offsets whose events are fully done are committed; "
        "after a crash the work done since the last commit is redone, and deduplicated.",
    )
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = Field(
        default=10.0,
        description="How long Kafka waits for a silent worker before giving its partitions to "
        "the others: the failover time after a crash (Faust's default is 60 s).",
    )
    heartbeat_interval_s: Annotated[float, Field(gt=0, le=100)] | None = Field(
        default=None,
        description="How often the worker and the sink worker tell Kafka they are alive, in "
        "seconds (Faust's broker_heartbeat_interval), less than session_timeout_s. A running "
        "process learns of a rebalance another one starts (one joining) at its next "
        "heartbeat, so this bounds how long that one waits to join. Unset: a fifth of "
        "session_timeout_s.",
    )
    group_instance_id: Annotated[str, Field(min_length=1, max_length=249)] | None = Field(
        default=None,
        description="Kafka static membership (group.instance.id) for this process, unique "
        "per process, e.g. ${POD_NAME} of a StatefulSet: a worker killed and restarted "
        "within session_timeout_s gets its partitions back without a rebalance (the others "
        "go on undisturbed). Unset: dynamic membership, where a stopping worker leaves the "
        "group at once; a static one does not, so its partitions wait session_timeout_s "
        "when it stops for good (scale-down). Worker and sinks are separate groups and may "
        "share it.",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let sinks and lookups call loopback, private and link-local addresses "
        "(refused by default: a templated URL must not reach internal services).",
    )
    answer_journal: bool = Field(
        default=True,
        description="Keep each model answer in a local file (under HOOKSTREAM_STATE_DIR) "
        "from its arrival until its result is on Kafka, so that a worker killed in between "
        "does not pay for the answer again after its restart. Off: such an event is "
        "answered by a second call.",
    )
    dedupe: DedupeConfig = Field(
        default_factory=DedupeConfig,
        description="How long event ids are remembered, so a sender's retry is handled once.",
    )
    ai_cache: CacheConfig = Field(
        default_factory=CacheConfig,
        description="How long model answers are reused; a flow turns it off with ai.cache.",
    )
    batch: BatchSettings = Field(
        default_factory=BatchSettings,
        description="How `hookstream batcher` groups the requests of flows with "
        "ai.mode: batch into provider jobs.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> WorkerSettings:
        beat = self.heartbeat_interval_s
        if beat is not None and beat >= self.session_timeout_s:
            raise ValueError(
                f"heartbeat_interval_s ({beat:g}) must be less than session_timeout_s "
                f"({self.session_timeout_s:g}): Kafka would take the worker for dead between "
                "two heartbeats"
            )
        return self

    @property
    def heartbeat_s(self) -> float:
        """The heartbeat interval in use: heartbeat_interval_s, else session_timeout_s / 5."""
        if self.heartbeat_interval_s is not None:
            return self.heartbeat_interval_s
        return self.session_timeout_s / 5


class HookstreamConfig(ConfigModel):
    version: Literal[1] = Field(
        default=1, description="The version of the file's format; 1 is the only one."
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="The Kafka connection and the topics hookstream creates.",
    )
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings,
        description="The webhook receiver (`hookstream gateway`): address, limits, TLS.",
    )
    worker: WorkerSettings = Field(
        default_factory=WorkerSettings,
        description="The worker and the sinks: retries, concurrency, and their memories.",
    )
    sources: tuple[SourceConfig, ...] = Field(
        description="Who may post webhooks: one entry per POST /webhooks/{name}. Required; "
        "an empty list makes the gateway refuse every webhook (404 unknown_source).",
    )
    providers: tuple[ProviderConfig, ...] = Field(
        default=(), description="The AI model endpoints that flows call, by name."
    )
    flows: tuple[FlowConfig, ...] = Field(
        default=(),
        description="What happens to events: which ones, the lookups, the model task and the "
        "sinks. An event no flow matches is kept on <prefix>.events and goes no further.",
    )

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)

    def flow(self, name: str) -> FlowConfig:
        return next(f for f in self.flows if f.name == name)

    def flows_for(self, source: str, event_type: str) -> list[FlowConfig]:
        return [f for f in self.flows if f.match.matches(source, event_type)]
