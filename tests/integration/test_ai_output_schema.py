"""The flow's output schema enforced in full by a real worker, the AI simulator as the model.

Flow ``strict`` asks for what the simulator never gives (a summary matching a pattern, at least
one tag): its answer breaks the schema twice, the re-ask says both errors, the second answer
breaks it the same way and the dead letter lists both. Flow ``triage`` asks for bounds the
simulator keeps (it clamps to ``maximum``): its answers pass.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from schemas.events import AIResult, DeadLetter, EnrichedEvent
from tests.support.ai_stack import AI_CONFIG, enriched, produce
from tests.support.kafka import Record, wait_for_records
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

TRIAGE_OUTPUT = """\
      output:
        type: object
        properties:
          sentiment: {type: string, enum: [positive, neutral, negative]}
          summary: {type: string}
        required: [sentiment, summary]
"""
OUTPUTS = """\
      output:
        type: object
        properties:
          sentiment: {type: string, enum: [positive, neutral, negative]}
          summary: {type: string}
          score: {type: number, minimum: 0, maximum: 1}
        required: [sentiment, summary, score]
"""
STRICT_FLOW = """\
  - name: strict
    match: {source: helpdesk, types: ["never.*"]}
    ai:
      provider: primary
      prompt: "{{ data.message }}"
      output:
        type: object
        properties:
          sentiment: {type: string, enum: [positive, neutral, negative]}
          summary: {type: string, pattern: "^TICKET-[0-9]+: "}
          tags: {type: array, items: {type: string}, minItems: 1}
        required: [sentiment, summary, tags]
      max_attempts: 1
"""
# Each error with its JSON path; the summary's value (the simulator's) stands between the two
# parts of the first.
SUMMARY_ERROR = re.compile(r"\$\.summary: '[^']*' does not match '\^TICKET-\[0-9\]\+: '")
TAGS_ERROR = "$.tags: [] should be non-empty"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("ai-output-schema")
    assert TRIAGE_OUTPUT in AI_CONFIG
    config = workdir / "flows.yaml"
    config.write_text(AI_CONFIG.replace(TRIAGE_OUTPUT, OUTPUTS) + STRICT_FLOW)
    async with running_stack(
        kafka_bootstrap, workdir, config_path=config, roles=("worker",)
    ) as running:
        yield running


def of_flow(record: EnrichedEvent, flow: str) -> EnrichedEvent:
    return record.model_copy(update={"flow": flow})


async def test_an_answer_invalid_twice_is_dead_lettered_with_every_error(stack: Stack) -> None:
    message = f"The export page crashes {uuid.uuid4().hex}."
    record = of_flow(enriched("cus-strict", message), "strict")
    await produce(stack.bootstrap, stack.topic("enriched"), [record])

    def dead(records: list[Record]) -> bool:
        return any(r.json()["event"]["id"] == record.event.id for r in records)

    letters = await wait_for_records(stack.bootstrap, stack.topic("dlq"), dead, timeout_s=90)
    raw = next(r for r in letters if r.json()["event"]["id"] == record.event.id)
    letter = DeadLetter.from_headers(list(raw.headers.items()), raw.json())
    calls = await stack.ai.calls_for(message)

    assert (letter.stage, letter.error_class, letter.attempts) == ("ai", "InvalidModelOutput", 2)
    assert [call["reask"] for call in calls] == [False, True]
    # The re-ask told the model both errors, in path order.
    correction = calls[1]["correction"]
    assert correction.startswith("That answer is not valid: the answer does not fit the schema")
    assert "(2 errors)" in correction
    summary_at = SUMMARY_ERROR.search(correction)
    assert summary_at is not None, correction
    assert summary_at.start() < correction.index(TAGS_ERROR)
    # The dead letter lists them all, for the answer after the re-ask and for the first one.
    validation_errors = raw.headers["hookstream-dlq-validation_errors"].decode()
    for text in (letter.error_message, validation_errors):
        assert text.startswith("still invalid after one re-ask: the answer does not fit")
        assert len(SUMMARY_ERROR.findall(text)) == 2, text
        assert text.count(TAGS_ERROR) == 2, text


async def test_an_answer_within_the_bounds_passes(stack: Stack) -> None:
    record = enriched("cus-ok", f"The billing page is great {uuid.uuid4().hex}.")
    await produce(stack.bootstrap, stack.topic("enriched"), [record])

    def answered(records: list[Record]) -> bool:
        return any(r.json()["event"]["id"] == record.event.id for r in records)

    records = await wait_for_records(
        stack.bootstrap, stack.topic("results"), answered, timeout_s=90
    )
    result = next(
        AIResult.model_validate(r.json())
        for r in records
        if r.json()["event"]["id"] == record.event.id
    )
    assert result.flow == "triage"
    assert 0 <= result.output["score"] <= 1
    assert not result.reasked
