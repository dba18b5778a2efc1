"""hookstream's one exception tree.

Every error hookstream raises on purpose derives from :class:`HookstreamError`, so callers can
catch "ours" without swallowing programming errors. Each class says whether retrying the same
operation later can succeed (``retriable``): the workers use that flag to choose between a
backoff-and-retry and an immediate dead letter, and the gateway to choose between a 4xx
("fix it") and a 503 ("retry later").

::

    HookstreamError
    ├── ConfigError                 bad YAML / field / env var; never retriable
    ├── WebhookRejected             the gateway refuses a request (carries the HTTP status)
    │   ├── UnknownSource           404
    │   ├── SignatureError          401
    │   ├── PayloadTooLarge         413
    │   ├── BodyTimeout             408: the body did not arrive within gateway.body_timeout_s
    │   ├── UnsupportedMediaType    415
    │   ├── MalformedRequest        400: not HTTP/1.1 the gateway reads; the connection closes
    │   ├── RequestHeadTooLarge     431: request line and headers over 64 KiB or 128 headers
    │   ├── InvalidPayload          400
    │   ├── ClientNotAllowed        403: the client address is not in the source's allow_ips
    │   └── RateLimited             429 + Retry-After: the source's token bucket is empty
    ├── BrokerUnavailable           Kafka did not acknowledge a write in time; retriable (503)
    │   ├── GatewayBusy             503 at once: too many writes in flight, or Kafka failing
    │   └── KafkaAccessDenied       the broker refused our login or TLS; not retriable
    ├── RecordTooLarge              a record is over the producer's request size; not retriable
    ├── TemplateError               a template refers to a field the event lacks; not retriable
    ├── ToolError                   an operator command (dlq, replay, publish, tail) cannot proceed
    │   └── UnknownTopic            the topic it reads or writes does not exist on the broker
    └── StageError                  a pipeline stage failed on one event
        ├── RemoteError             an HTTP peer (AI provider, CRM, lookup) failed
        │   ├── RetriableRemoteError      429, 5xx, timeout, connection error
        │   └── PermanentRemoteError      other 4xx: the request itself is wrong
        ├── UnsafeDestination       a sink/lookup URL points at a private address; not retriable
        ├── CircuitOpen             a provider's breaker is open: skip it (try a fallback)
        └── InvalidModelOutput      the model's answer does not fit the flow's schema
"""

from __future__ import annotations


class HookstreamError(Exception):
    """Root of every error hookstream raises deliberately."""

    retriable: bool = False


class ConfigError(HookstreamError):
    """The config file is wrong; the message names the file, the field path and the reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class WebhookRejected(HookstreamError):
    """The gateway refuses a webhook. ``status`` and ``code`` go into the problem+json answer."""

    status: int = 400
    code: str = "rejected"
    title: str = "Webhook rejected"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        self.detail = detail
        if code is not None:
            self.code = code
        super().__init__(detail)


class UnknownSource(WebhookRejected):
    status = 404
    code = "unknown_source"
    title = "Unknown webhook source"


class SignatureError(WebhookRejected):
    status = 401
    code = "signature_invalid"
    title = "Signature verification failed"


class PayloadTooLarge(WebhookRejected):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class BodyTimeout(WebhookRejected):
    """The sender stopped sending its body: retriable by the sender (send it again whole)."""

    status = 408
    code = "body_timeout"
    title = "Request timeout"
    retriable = True


class UnsupportedMediaType(WebhookRejected):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class MalformedRequest(WebhookRejected):
    """Not HTTP/1.1 the gateway can read (syntax, framing, an upgrade): the connection closes."""

    status = 400
    code = "malformed_request"
    title = "Malformed request"


class RequestHeadTooLarge(WebhookRejected):
    status = 431
    code = "head_too_large"
    title = "Request header fields too large"


class InvalidPayload(WebhookRejected):
    status = 400
    code = "invalid_payload"
    title = "Invalid payload"


class ClientNotAllowed(WebhookRejected):
    status = 403
    code = "ip_not_allowed"
    title = "Client address not allowed"


class RateLimited(WebhookRejected):
    """The source's token bucket is empty; ``retry_after_s`` says when a token is back."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"
    retriable = True

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class BrokerUnavailable(HookstreamError):
    """Kafka did not acknowledge a write within the deadline; the sender should retry."""

    retriable = True
    code = "broker_unavailable"


class RecordTooLarge(HookstreamError):
    """A record is larger than Kafka accepts in one request (``max_request_size``). Not
    retriable: the same record fails the same way; the gateway answers 413."""


class GatewayBusy(BrokerUnavailable):
    """The gateway did not even try the write: too many are in flight, or Kafka is failing.

    Answered with 503 at once rather than queued, so a slow broker cannot pile up requests.
    """

    def __init__(self, message: str, *, code: str = "overloaded") -> None:
        self.code = code
        super().__init__(message)


class KafkaAccessDenied(BrokerUnavailable):
    """The broker answers but refuses this client: SASL authentication failed (wrong password
    or unknown user), its certificate is not trusted, or the client speaks the wrong protocol
    for the listener (plaintext on a TLS port). Not retriable: the same settings fail the same
    way, so start-up stops at once instead of retrying. The message never holds the secret."""

    retriable = False
    code = "kafka_access_denied"


class TemplateError(HookstreamError):
    """A template names a field the event does not have."""


class ToolError(HookstreamError):
    """An operator command (dlq, replay, publish, tail) cannot do what was asked; the message
    names the option or input line at fault. Not retriable."""


class LettersRefused(ToolError):
    """A redrive wrote what it could, but Kafka refused some letters' records as larger than
    their topic accepts (``max.message.bytes``): raising the limit, then redriving again, is
    the fix. The refused letters are not marked redriven; a later redrive sends them."""


class Fenced(ToolError):
    """A newer process took over this one's Kafka transactional id (a second ``hookstream
    batcher`` on the same ``kafka.topic_prefix``): this one must stop before it writes or
    submits anything more, or both would pay for the same requests. Not retriable."""


class UnknownTopic(ToolError):
    """The topic an operator command reads or writes does not exist on the broker (a wrong
    ``kafka.topic_prefix``, or hookstream has not created its topics yet). Not retriable."""

    def __init__(self, topic: str, *, hint: str = "") -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist" + (f" {hint}" if hint else ""))


class StageError(HookstreamError):
    """A pipeline stage failed on one event; ``stage`` names it for the dead letter."""

    def __init__(self, message: str, *, stage: str = "") -> None:
        self.stage = stage
        super().__init__(message)


class RemoteError(StageError):
    """An HTTP peer answered badly or not at all."""

    def __init__(
        self,
        message: str,
        *,
        stage: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(message, stage=stage)


class RetriableRemoteError(RemoteError):
    """429, 5xx, timeouts and connection errors: trying again later can succeed."""

    retriable = True


class PermanentRemoteError(RemoteError):
    """A 4xx other than 408/429: the request is wrong and will stay wrong."""


class UnsafeDestination(StageError):
    """A sink or lookup URL resolves to a loopback, private or link-local address and the
    config does not allow it (SSRF guard). Not retriable: the event is dead-lettered."""


class CircuitOpen(StageError):
    """A provider failed too often lately; calls skip it until its breaker lets a trial through.

    Retriable (the breaker closes again), but the AI stage moves on to the flow's next fallback
    rather than waiting.
    """

    retriable = True


class InvalidModelOutput(StageError):
    """The model answered, but not with JSON that fits the flow's output schema.

    Retriable because models are not deterministic: asking again usually helps.
    """

    retriable = True
