"""Retry-After parsing (seconds or HTTP date) for the retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from agents.outbound.http import RETRIABLE_STATUSES, new_session, request_json, retry_after_s
from schemas.errors import RetriableRemoteError
from tests.support.sockets import port_that_never_accepts


def headers(value: str | None) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    if value is not None:
        result["Retry-After"] = value
    return result


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), ("0", 0.0), ("1.5", 1.5)])
def test_seconds(value: str, seconds: float) -> None:
    assert retry_after_s(headers(value)) == seconds


def test_negative_seconds_are_clamped_to_zero() -> None:
    assert retry_after_s(headers("-30")) == 0.0


def test_header_name_is_case_insensitive_in_http_headers() -> None:
    raw: CIMultiDict[str] = CIMultiDict()
    raw["retry-after"] = "7"
    assert retry_after_s(raw) == 7.0


def test_http_date_in_the_future() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    value = format_datetime(when, usegmt=True)
    seconds = retry_after_s(headers(value))
    assert seconds is not None
    assert 80 <= seconds <= 91


def test_http_date_in_the_past_means_now() -> None:
    when = datetime.now(UTC) - timedelta(hours=1)
    assert retry_after_s(headers(format_datetime(when, usegmt=True))) == 0.0


def test_http_date_without_zone_is_taken_as_utc() -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    value = when.strftime("%a, %d %b %Y %H:%M:%S -0000")
    seconds = retry_after_s(headers(value))
    assert seconds is not None
    assert 50 <= seconds <= 61


@pytest.mark.parametrize("value", ["soon", "in a minute", "Mon, 99 Foo 2024", "12s"])
def test_garbage_is_ignored(value: str) -> None:
    assert retry_after_s(headers(value)) is None


@pytest.mark.parametrize("value", [None, ""])
def test_absent_header(value: str | None) -> None:
    assert retry_after_s(headers(value)) is None


def test_retriable_statuses() -> None:
    assert {408, 429, 500, 502, 503, 504} <= RETRIABLE_STATUSES
    assert not {400, 401, 403, 404, 409, 422} & RETRIABLE_STATUSES


async def test_a_peer_that_never_completes_the_handshake_is_bounded_by_the_connect_timeout() -> (
    None
):
    """worker.http_connect_timeout_s reaches every call, though each sets its own total.

    A listener whose accept queue is full drops further SYNs, so the connection never opens.
    Without the session's connect bound carried into the request's timeout, the call waits for
    its whole total and says "no answer within 5 s".
    """
    with port_that_never_accepts() as port:
        async with new_session(connect_timeout_s=0.2) as session:
            with pytest.raises(RetriableRemoteError, match=r"could not connect within 0\.2 s"):
                await request_json(
                    session,
                    "GET",
                    f"http://127.0.0.1:{port}/customers/1",
                    stage="enrich",
                    what="lookup customer",
                    timeout_s=5,
                )
