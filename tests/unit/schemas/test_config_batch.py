"""``ai.mode: batch`` and ``worker.batch`` as the loader reads them: the example loads, the
defaults hold, and a step in batch mode is refused at its flow's line."""

from __future__ import annotations

from pathlib import Path

from schemas.config_loader import load_config
from schemas.topics import ROLES, Topics
from tests.unit.schemas.test_config_loader import EXAMPLE_ENV, problems_of
from tests.unit.schemas.test_config_steps import STEPS, config

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flows-batch.yaml"


def test_the_example_has_a_batch_flow_and_the_batchers_settings() -> None:
    loaded = load_config(EXAMPLE, env=EXAMPLE_ENV)
    [flow] = loaded.flows
    assert flow.ai is not None
    assert flow.ai.mode == "batch"
    assert loaded.worker.batch.max_wait_s == 60
    assert loaded.worker.batch.max_requests == 10_000
    assert loaded.worker.batch.poll_s == 30


def test_ai_is_synchronous_unless_set(tmp_path: Path) -> None:
    flow = '    ai: {provider: default, prompt: "{{ data.m }}", output: {type: object}}\n'
    loaded = load_config(config(tmp_path, flow), env={})
    assert loaded.flows[0].ai is not None
    assert loaded.flows[0].ai.mode == "sync"


def test_a_step_in_batch_mode_is_refused(tmp_path: Path) -> None:
    flow = STEPS.replace("      - name: reply\n", "        mode: batch\n      - name: reply\n")
    problems = problems_of(config(tmp_path, flow), {})
    assert len(problems) == 1
    assert "flows[0]: steps: mode batch is for a flow's ai only" in problems[0]


def test_the_queue_topic_is_created_with_the_others() -> None:
    topics = Topics("p")
    assert "ai-batch" in ROLES
    assert topics.ai_batch in topics.all()
    assert topics.ai_batch_jobs == "p.ai-batch-jobs"
