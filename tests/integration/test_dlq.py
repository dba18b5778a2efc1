"""Dead letters on the real broker with a real worker: the model answers garbage, the events are
dead-lettered with their context; once the cause is fixed, ``hookstream dlq redrive`` makes
their results, and running it again redrives nothing twice.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from streams.client import Publisher, make_event
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import run_cli
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("dlq")
    async with running_stack(
        kafka_bootstrap, workdir, roles=("worker",), ai_knobs={"rate_malformed": 1.0}
    ) as running:
        yield running


def _ids(records: list[Record]) -> list[str]:
    return [r.json()["event"]["id"] for r in records]


async def test_redrive_after_the_fix_produces_the_results_once(stack: Stack) -> None:
    events = [
        make_event(
            {"event": "ticket.created", "customer_id": f"cus_00{n}", "message": f"DLQ test {n}"},
            source="helpdesk",
            type="ticket.created",
            key=f"cus_00{n}",
            id=f"dlq-{uuid.uuid4().hex}",
        )
        for n in (1, 2, 3)
    ]
    ids = {e.id for e in events}
    async with Publisher(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix) as pub:
        await pub.publish_many(events)
    letters = await wait_for_records(
        stack.bootstrap,
        stack.topic("dlq"),
        lambda rs: set(_ids(rs)) >= ids,
        timeout_s=120,
    )
    for letter in letters:
        assert letter.headers["hookstream-dlq-stage"] == b"ai"
        assert letter.headers["hookstream-dlq-original_topic"] == stack.topic("enriched").encode()
        assert letter.headers["hookstream-flow"] == b"feedback-triage"
        assert int(letter.headers["hookstream-dlq-attempts"]) >= 2
    # The original value, byte for byte, with where it came from and when it failed.
    enriched = {
        (r.partition, r.offset): r for r in await read_all(stack.bootstrap, stack.topic("enriched"))
    }
    for letter in letters:
        at = (
            int(letter.headers["hookstream-dlq-original_partition"]),
            int(letter.headers["hookstream-dlq-original_offset"]),
        )
        assert enriched[at].value == letter.value
        first = letter.headers["hookstream-dlq-first_failure_at"]
        assert first <= letter.headers["hookstream-dlq-last_failure_at"]
    assert not await read_all(stack.bootstrap, stack.topic("results"))

    config = ("-c", str(stack.config_path))
    code, out, err = await run_cli("dlq", "list", *config, "--stage", "ai", "--json", env=stack.env)
    assert code == 0, err
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert len(listed) == 3
    assert {entry["flow"] for entry in listed} == {"feedback-triage"}
    assert not any(entry["redriven"] for entry in listed)
    code, out, err = await run_cli("dlq", "list", *config, "--stage", "enrich", env=stack.env)
    assert code == 0, err
    assert "0 dead letter(s)" in err

    # The fix: the model answers well again. Redrive what the AI stage dead-lettered.
    await stack.ai.configure(rate_malformed=0.0)
    calls_before = (await stack.ai.stats())["requests"]
    code, out, err = await run_cli("dlq", "redrive", *config, "--stage", "ai", env=stack.env)
    assert code == 0, err
    assert out.count(f"→ {stack.topic('enriched')}") == 3
    assert "redrove 3; 0 matching were redriven before" in err

    results = await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda rs: set(_ids(rs)) >= ids,
        timeout_s=120,
    )
    assert sorted(_ids(results)) == sorted(ids)
    assert all(r.json()["flow"] == "feedback-triage" for r in results)
    assert (await stack.ai.stats())["requests"] - calls_before == 3

    # A second run finds them all redriven, and sends nothing.
    code, out, err = await run_cli("dlq", "redrive", *config, env=stack.env)
    assert code == 0, err
    assert "redrove 0; 3 matching were redriven before" in err
    redriven = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("enriched"))
        if "hookstream-redriven" in r.headers
    ]
    assert sorted(_ids(redriven)) == sorted(ids)
    assert not any(k.startswith("hookstream-dlq-") for r in redriven for k in r.headers)
    code, out, err = await run_cli("dlq", "list", *config, "--json", env=stack.env)
    assert all(orjson.loads(line)["redriven"] for line in out.splitlines())

    code, out, err = await run_cli("dlq", "show", *config, listed[0]["dlq"], env=stack.env)
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["stage"] == "ai"
    assert shown["value"]["event"]["id"] in ids
    assert shown["headers"]["hookstream-dlq-original_topic"] == stack.topic("enriched")
