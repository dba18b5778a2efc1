"""replay --batch answers one request per event: flows with several AI steps or none are
refused by name, never half-replayed (a step's prompt needs the answer before it)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.config_loader import load_config
from schemas.errors import ToolError
from streams.ops.replay_batch import BatchReplayer
from tests.support.stack import REPO_ROOT

STEPS = REPO_ROOT / "examples" / "flows-steps.yaml"


def _replayer(flow: str | None) -> BatchReplayer:
    config = load_config(STEPS, require_secrets=False)
    backend: Any = object()  # never asked: the refusal comes before any planning
    return BatchReplayer(
        config,
        f"{config.kafka.topic_prefix}.enriched",
        backend,
        replay_id="r1",
        start=None,
        end=None,
        flow=flow,
    )


@pytest.mark.parametrize(
    ("flow", "says"), [("ticket-reply", "several steps"), ("payment-sync", "no AI step")]
)
def test_a_flow_with_steps_or_no_ai_step_is_refused_by_name(flow: str, says: str) -> None:
    with pytest.raises(ToolError) as raised:
        _replayer(flow)
    assert flow in str(raised.value)
    assert says in str(raised.value)
    assert "without --batch" in str(raised.value)


def test_without_flow_only_one_step_flows_are_batched() -> None:
    replayer = _replayer(None)
    assert set(replayer.flows) == set()  # the example has no one-step flow
    assert replayer.other_flows == {"ticket-reply", "payment-sync"}
