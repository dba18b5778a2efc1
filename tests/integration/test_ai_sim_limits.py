"""The AI simulator's rate limits over real HTTP: 429 with the provider's headers past them.

Timing: a refused request's wait is asserted as an upper bound of the minute and a lower bound
after what elapsed, never as an exact figure.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from agents.outbound.http import retry_after_s
from streams.dev.ai_sim_logic import count_tokens
from tests.integration.test_simulators import chat_body, post_chat
from tests.support.sims import running_ai_sim

pytestmark = pytest.mark.integration
TPM = 1000
MAX_TOKENS = 900


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _body() -> dict[str, Any]:
    return {**chat_body(), "max_tokens": MAX_TOKENS}


def _prompt_tokens(body: dict[str, Any]) -> int:
    return count_tokens("".join(m["content"] for m in body["messages"]))


async def test_tokens_per_minute_answers_429_with_openais_headers(
    http: aiohttp.ClientSession,
) -> None:
    async with running_ai_sim() as sim:
        await sim.configure(tokens_per_minute=TPM)
        body = _body()
        started = time.monotonic()
        # Admitted: prompt + max_tokens reserved, then settled to the usage it reports.
        status, headers, answer = await post_chat(http, sim.base_url, body)
        assert status == 200
        used = answer["usage"]["total_tokens"]
        assert answer["usage"]["prompt_tokens"] == _prompt_tokens(body)
        assert headers["x-ratelimit-limit-tokens"] == str(TPM)
        assert headers["x-ratelimit-remaining-tokens"] == str(
            TPM - _prompt_tokens(body) - MAX_TOKENS
        )
        # The second still fits beside the first one's usage; the third does not.
        status, _, second = await post_chat(http, sim.base_url, body)
        assert status == 200
        used += second["usage"]["total_tokens"]
        assert used + _prompt_tokens(body) + MAX_TOKENS > TPM
        status, headers, error = await post_chat(http, sim.base_url, body)
        elapsed_s = time.monotonic() - started
        assert status == 429
        assert error["error"]["code"] == "rate_limit_exceeded"
        assert error["error"]["type"] == "tokens"
        assert headers["x-ratelimit-remaining-tokens"] == str(TPM - used)
        # The wait: until the first request leaves the minute.
        wait_s = retry_after_s(headers)
        assert wait_s is not None
        assert 60 - elapsed_s - 1 <= wait_s <= 60
        assert int(headers["Retry-After"]) == pytest.approx(wait_s, abs=1)
        assert headers["x-ratelimit-reset-tokens"].endswith("s")
        stats = await sim.stats()
        assert stats["by_status"] == {"200": 2, "429": 1}
        assert stats["rate_limit"] == {
            "limited": 1,
            "requests_counted": 2,
            "tokens_counted": used,
        }


async def test_anthropic_endpoint_uses_anthropics_header_names(
    http: aiohttp.ClientSession,
) -> None:
    body = {
        "model": "claude-sim",
        "max_tokens": MAX_TOKENS,
        "system": "Triage this message.",
        "messages": [{"role": "user", "content": "The export is broken."}],
    }
    async with running_ai_sim() as sim:
        await sim.configure(tokens_per_minute=TPM, requests_per_minute=1)
        url = f"{sim.base_url}/messages"
        async with http.post(url, json=body) as response:
            assert response.status == 200
            assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert response.headers["anthropic-ratelimit-tokens-limit"] == str(TPM)
        async with http.post(url, json=body) as response:
            assert response.status == 429
            headers = dict(response.headers)
            assert (await response.json())["error"]["type"] == "requests"
        assert headers["anthropic-ratelimit-requests-limit"] == "1"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
        assert 0 < (reset - datetime.now(UTC)).total_seconds() <= 60
        assert "x-ratelimit-remaining-tokens" not in headers
        assert 0 < int(headers["Retry-After"]) <= 60


async def test_without_limits_no_rate_limit_headers(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim() as sim:
        status, headers, _ = await post_chat(http, sim.base_url, _body())
        assert status == 200
        assert not [name for name in headers if "ratelimit" in name.lower()]
