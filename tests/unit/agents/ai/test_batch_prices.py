"""Cost at batch prices: the model's batch_price_factor of the price table (0.5 by default)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.task import ProviderRuntime
from schemas.config_ai import PricingConfig, ProviderConfig
from schemas.events import TokenUsage


def _runtime(prices: dict[str, PricingConfig]) -> ProviderRuntime:
    provider = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:1/v1", model="m")
    provider = provider.model_copy(update={"prices": prices})
    return ProviderRuntime(
        provider,
        None,  # type: ignore[arg-type]  # prices only: no client is called
        RateBudget(provider.budget),
        CircuitBreaker("p", provider.breaker),
    )


def test_a_batch_request_costs_the_factor_of_the_price() -> None:
    usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=500_000)
    default = _runtime({"m": PricingConfig(input_usd_per_mtok=2.0, output_usd_per_mtok=8.0)})
    assert default.cost_usd("m", "m", usage) == pytest.approx(6.0)
    assert default.cost_usd("m", "m", usage, batch=True) == pytest.approx(3.0)
    custom = _runtime(
        {
            "m": PricingConfig(
                input_usd_per_mtok=2.0, output_usd_per_mtok=8.0, batch_price_factor=0.25
            )
        }
    )
    assert custom.cost_usd("m", "m", usage, batch=True) == pytest.approx(1.5)


def test_a_factor_above_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="batch_price_factor"):
        PricingConfig(batch_price_factor=1.5)
