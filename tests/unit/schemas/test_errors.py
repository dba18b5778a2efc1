"""The exception tree: HTTP statuses of refusals and the retriable flags as documented."""

from __future__ import annotations

import pytest

from schemas import errors
from schemas.errors import (
    BodyTimeout,
    BrokerUnavailable,
    ClientNotAllowed,
    ConfigError,
    HookstreamError,
    InvalidModelOutput,
    InvalidPayload,
    MalformedRequest,
    PayloadTooLarge,
    PermanentRemoteError,
    RateLimited,
    RemoteError,
    RequestHeadTooLarge,
    RetriableRemoteError,
    SignatureError,
    StageError,
    TemplateError,
    UnknownSource,
    UnsupportedMediaType,
    WebhookRejected,
)


def rejection_classes() -> set[type[WebhookRejected]]:
    found: set[type[WebhookRejected]] = set()
    pending: list[type[WebhookRejected]] = [WebhookRejected]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub)
            pending.append(sub)
    return {c for c in found if c.__module__ == errors.__name__}


def test_every_error_in_the_module_derives_from_the_root() -> None:
    module_errors = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert module_errors - {HookstreamError}
    for cls in module_errors:
        assert issubclass(cls, HookstreamError), cls


def test_every_webhook_rejection_has_a_4xx_status() -> None:
    rejections = rejection_classes()
    assert rejections == {
        UnknownSource,
        SignatureError,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidPayload,
        ClientNotAllowed,
        RateLimited,
        BodyTimeout,
        MalformedRequest,
        RequestHeadTooLarge,
    }
    checked: list[type[WebhookRejected]] = [WebhookRejected, *rejections]
    for cls in checked:
        assert 400 <= cls.status < 500, cls
        # 429 and 408 are the refusals a plain retry clears: after Retry-After, or by sending
        # the body whole this time.
        assert cls.retriable is (cls in (RateLimited, BodyTimeout)), cls


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (UnknownSource, 404),
        (SignatureError, 401),
        (PayloadTooLarge, 413),
        (BodyTimeout, 408),
        (UnsupportedMediaType, 415),
        (InvalidPayload, 400),
    ],
)
def test_documented_statuses(cls: type[WebhookRejected], status: int) -> None:
    assert cls.status == status


def test_rejection_codes_are_distinct_and_overridable() -> None:
    codes = [
        c.code
        for c in (
            UnknownSource,
            SignatureError,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidPayload,
        )
    ]
    assert len(set(codes)) == len(codes)
    error = SignatureError("missing header X-Signature", code="missing_signature")
    assert error.code == "missing_signature"
    assert error.detail == "missing header X-Signature"
    assert str(error) == "missing header X-Signature"
    assert SignatureError("x").code == "signature_invalid"
    assert SignatureError.code == "signature_invalid"  # the override stays on the instance


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (ConfigError(["a.yaml:1: x: bad"]), False),
        (UnknownSource("no such source"), False),
        (SignatureError("bad"), False),
        (BrokerUnavailable("no ack"), True),
        (TemplateError("no field"), False),
        (StageError("failed", stage="enrich"), False),
        (RemoteError("failed"), False),
        (RetriableRemoteError("HTTP 503", status=503), True),
        (PermanentRemoteError("HTTP 400", status=400), False),
        (InvalidModelOutput("not json", stage="ai"), True),
    ],
)
def test_retriable_flags(error: HookstreamError, retriable: bool) -> None:
    assert error.retriable is retriable


def test_config_error_keeps_every_problem() -> None:
    error = ConfigError(["f.yaml:2: a: one", "f.yaml:5: b: two"])
    assert error.problems == ["f.yaml:2: a: one", "f.yaml:5: b: two"]
    assert str(error) == "f.yaml:2: a: one\nf.yaml:5: b: two"


def test_remote_error_carries_status_retry_after_and_stage() -> None:
    error = RetriableRemoteError("HTTP 429", stage="ai", status=429, retry_after_s=2.5)
    assert (error.stage, error.status, error.retry_after_s) == ("ai", 429, 2.5)
    assert isinstance(error, StageError)
