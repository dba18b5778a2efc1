"""The console's pieces without a broker: the bind rule, escaping, charts, the metrics parsing."""

from __future__ import annotations

import pytest

from schemas.errors import ToolError
from streams.console.html import chart, esc, table
from streams.console.scrape import shown, states_of
from streams.console.security import Guard, bind_token, is_loopback

METRICS = """\
# TYPE hookstream_ai_breaker_state gauge
hookstream_ai_breaker_state{provider="default"} 2.0
hookstream_ai_breaker_state{provider="backup"} 0.0
# TYPE hookstream_ai_flow_paused gauge
hookstream_ai_flow_paused{flow="feedback-triage"} 1.0
# TYPE hookstream_sink_paused gauge
hookstream_sink_paused{flow="feedback-triage",sink="crm"} 0.0
# TYPE hookstream_runner_in_flight gauge
hookstream_runner_in_flight{agent="ai"} 3.0
"""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the address under test, nothing binds it
        ("192.168.1.5", False),
        ("example.internal", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_token_is_needed_beyond_loopback_and_must_be_long() -> None:
    assert bind_token("127.0.0.1", None) is None
    assert bind_token("127.0.0.1", "") is None
    with pytest.raises(ToolError, match=r"--host 10\.0\.0\.1: .*HOOKSTREAM_CONSOLE_TOKEN"):
        bind_token("10.0.0.1", None)
    with pytest.raises(ToolError, match="15 characters long; use at least 16") as refused:
        bind_token("10.0.0.1", "x" * 15)
    assert "x" * 15 not in str(refused.value)
    assert bind_token("10.0.0.1", "y" * 16) == "y" * 16


def test_csrf_tokens_belong_to_one_session_and_one_process() -> None:
    guard, other = Guard(None), Guard(None)
    token = guard.csrf_token("session-a")
    assert guard.csrf_ok("session-a", token)
    assert not guard.csrf_ok("session-b", token)
    assert not guard.csrf_ok("", guard.csrf_token(""))  # no session, no form
    assert not other.csrf_ok("session-a", token)  # a restarted console: forms are stale


def test_markup_from_kafka_is_text() -> None:
    hostile = "<script>alert('x')</script>\" onload=\"y"
    cell = esc(hostile)
    assert "<" not in cell
    assert '"' not in cell
    assert "&lt;script&gt;" in cell
    html = table([hostile], [[cell]])
    assert "<script>" not in html


def test_chart_scales_to_its_peak_and_escapes_its_title() -> None:
    svg = chart("<b>Events</b>", [0, 2, 4], start_ms=0, bucket_s=60, width=104, height=58)
    assert "&lt;b&gt;Events&lt;/b&gt; (max 4; 60 s buckets)" in svg
    # x from 4 to 100, y from 54 (0) to 4 (the peak)
    assert 'points="4.0,54.0 52.0,29.0 100.0,4.0"' in svg
    flat = chart("Dead letters", [0, 0], start_ms=0, bucket_s=60, width=104, height=58)
    assert 'points="4.0,54.0 100.0,54.0"' in flat


def test_states_from_metrics_text() -> None:
    found = {(s.kind, s.name): (s.state, s.bad) for s in states_of("w", METRICS)}
    assert found == {
        ("breaker", "default"): ("open", True),
        ("breaker", "backup"): ("closed", False),
        ("flow", "feedback-triage"): ("paused", True),
        ("sink", "feedback-triage / crm"): ("delivering", False),
    }


def test_a_metrics_url_is_shown_without_its_credentials() -> None:
    assert shown("http://user:s3cret@10.0.0.5:9464/metrics") == "http://10.0.0.5:9464/metrics"
    assert shown("http://worker:9464/metrics?x=1") == "http://worker:9464/metrics?x=1"


def test_a_long_window_keeps_the_newest_records_up_to_the_limit() -> None:
    from aiokafka import TopicPartition

    from streams.console.activity import _newest
    from streams.kafka.reader import Window

    a, b, c = (TopicPartition("t", p) for p in range(3))
    win = Window({a: (0, 10), b: (5, 1005), c: (0, 2000)})
    kept, truncated = _newest(win, 100)
    assert truncated
    assert kept.size == 100
    # a keeps its 10; b and c share the other 90, each its newest records
    assert kept.ranges == {a: (0, 10), b: (960, 1005), c: (1955, 2000)}
    assert _newest(win, 5000) == (win, False)


def test_the_states_section_says_when_nothing_is_known() -> None:
    from streams.console.pages import _states
    from streams.console.scrape import Scrape

    none_given = _states(Scrape(urls=[]))
    assert "No metrics URL given" in none_given
    assert "states are unknown" in none_given
    url = "http://127.0.0.1:9/metrics"
    none_answered = _states(Scrape(urls=[url], errors={url: "ClientConnectorError: refused"}))
    assert "None of the 1 metrics URL(s) answered" in none_answered
    assert "ClientConnectorError: refused" in none_answered
    quiet = _states(Scrape(urls=[url]))
    assert "export no breaker or sink-gate state yet" in quiet
