"""Multi-step flows and flows with no AI step, with the real worker and sink worker on the
shared broker, the AI and CRM simulators (issue 14, "Flows with several AI steps ... and flows
with no AI step at all").

The flows file is examples/flows-steps.yaml: ``ticket-reply`` asks ``classify`` and then
``draft``, whose prompt holds classify's answer; ``payment-sync`` has no AI step. The AI
simulator answers deterministically (:func:`streams.dev.ai_sim.analyse`), so each test knows
the exact prompt step 2 must have received, and counts calls by their prompt.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from schemas.events import AIResult
from streams.client import Publisher, make_event
from streams.dev.ai_sim import analyse
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import wait_until
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flows-steps.yaml"


def steps_config(workdir: Path, *, second_provider: bool = False) -> Path:
    """The example, with short retry pauses and 6 s sessions (a worker killed -9 and started
    again joins once its killed self's session expired: 10 s by default); ``second_provider``:
    the draft step asks its own provider (model sim-2), so it can be down while classify's is
    up."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["worker"] = {
        "allow_private_networks": True,
        "retry_backoff_s": 0.05,
        "retry_backoff_max_s": 0.5,
        "commit_interval_s": 0.5,
        "session_timeout_s": 6,
    }
    if second_provider:
        data["providers"].append(
            {**data["providers"][0], "name": "second", "model": "sim-2", "timeout_s": 10}
        )
        data["flows"][0]["steps"][1]["provider"] = "second"
    path = workdir / "flows-steps.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def draft_prompt(message: str) -> str:
    """The prompt the draft step must send: classify's answer, as the simulator gives it."""
    first = analyse(message)
    return f"Draft a reply to this {first.sentiment} {first.category} ticket: {first.summary}"


async def publish(stack: Stack, *events: Any) -> None:
    async with Publisher(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix) as pub:
        for event in events:
            await pub.publish_event(event)


def ticket(customer: str, message: str) -> Any:
    return make_event(
        {"event": "ticket.created", "customer_id": customer, "message": message},
        source="helpdesk",
        type="ticket.created",
        key=customer,
        id=f"steps-{uuid.uuid4().hex}",
    )


async def results_of(stack: Stack, ids: set[str], timeout_s: float = 120) -> list[Record]:
    """The results of ``ids`` once all are on the results topic, in partition/offset order."""

    def mine(records: list[Record]) -> list[Record]:
        return [r for r in records if AIResult.model_validate(r.json()).event.id in ids]

    await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda records: {AIResult.model_validate(r.json()).event.id for r in mine(records)} >= ids,
        timeout_s=timeout_s,
    )
    return mine(await read_all(stack.bootstrap, stack.topic("results")))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("flow-steps")
    async with running_stack(
        kafka_bootstrap, workdir, config_path=steps_config(workdir), roles=("worker", "sinks")
    ) as running:
        yield running


async def test_step_two_sees_step_one_with_one_call_per_step_in_key_order(stack: Stack) -> None:
    run = uuid.uuid4().hex[:6]
    # Three events of one key (order is checked on them) and two of other keys.
    messages = [
        f"The export is broken again {run} #{i}, this is terrible."
        if i % 2
        else f"Thank you {run} #{i}, the new billing page is great."
        for i in range(5)
    ]
    customers = ["cus_201", "cus_201", "cus_201", "cus_202", "cus_203"]
    events = [ticket(c, m) for c, m in zip(customers, messages, strict=True)]
    await publish(stack, *events)
    records = await results_of(stack, {e.id for e in events})
    results = {r.event.id: r for r in (AIResult.model_validate(x.json()) for x in records)}
    assert len(records) == len(events)  # one result each
    for event, message in zip(events, messages, strict=True):
        result = results[event.id]
        first = analyse(message)
        assert result.steps["classify"] == {
            "sentiment": first.sentiment,
            "category": first.category,
            "summary": first.summary,
        }
        # Step 2's prompt held step 1's answer: the simulator got exactly that text, once.
        prompt = draft_prompt(message)
        assert result.output == {"reply": analyse(prompt).summary}
        assert result.steps["draft"] == result.output
        assert len(await stack.ai.calls_for(message)) == 1
        assert len(await stack.ai.calls_for(prompt)) == 1
        assert result.attempts == 2
        assert result.usage.total_tokens > 0
    # Per-key order: the key's results are on Kafka, and in the CRM, in publish order.
    same_key = [e.id for e in events[:3]]
    on_kafka = [AIResult.model_validate(r.json()).event.id for r in records]
    assert [i for i in on_kafka if i in same_key] == same_key
    updates = await stack.crm.wait_for_updates(3, customer_id="cus_201", timeout_s=120)
    drafts = [u["body"]["draft_reply"] for u in updates[-3:]]
    assert drafts == [analyse(draft_prompt(m)).summary for m in messages[:3]]
    assert updates[-1]["body"]["last_feedback_category"] == analyse(messages[2]).category


async def test_a_flow_with_no_ai_step_delivers_without_a_model_call(stack: Stack) -> None:
    calls_before = (await stack.ai.stats())["requests"]
    customer = f"cus_{uuid.uuid4().hex[:8]}"
    payment = make_event(
        {
            "id": f"pay-{uuid.uuid4().hex}",
            "type": "payment.failed",
            "data": {"customer": customer, "amount": 4900, "currency": "eur"},
        },
        source="payments",
        type="payment.failed",
        key=customer,
    )
    await publish(stack, payment)
    [update] = await stack.crm.wait_for_updates(1, customer_id=customer, timeout_s=120)
    assert update["body"] == {
        "last_payment_event": "payment.failed",
        "last_payment_amount": 4900,
        "last_payment_currency": "EUR",
    }
    [record] = await results_of(stack, {payment.id})
    result = AIResult.model_validate(record.json())
    assert (result.flow, result.attempts, result.provider) == ("payment-sync", 0, "")
    assert result.output == {"event": "payment.failed", "amount": 4900, "currency": "EUR"}
    assert (await stack.ai.stats())["requests"] == calls_before  # no model call at all


def journaled_steps(state_dir: Path, step: str) -> int:
    """Step answers in the worker's journal files (the sentinel that they were paid)."""
    needle = f"#step/{step}".encode()
    return sum(p.read_bytes().count(needle) for p in (state_dir / "answers").glob("*/slot-*"))


async def test_a_worker_killed_between_steps_does_not_pay_step_one_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    count = 6
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=steps_config(tmp_path, second_provider=True),
        roles=("worker",),
    ) as stack:
        await stack.ai.configure(down_models=["sim-2"])  # step 2's model answers 503 until told
        worker = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        messages = [f"The invoice is wrong {run} #{i}, please fix it." for i in range(count)]
        events = [ticket(f"cus_{run}_{i}", m) for i, m in enumerate(messages)]
        await publish(stack, *events)
        state = Path(worker.env["HOOKSTREAM_STATE_DIR"])

        async def step_one_paid_for_all() -> bool:
            return journaled_steps(state, "classify") >= count

        await wait_until(step_one_paid_for_all, poll_s=0.1)  # step 2 is failing meanwhile
        assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        await stack.ai.configure(down_models=[])
        await worker.start()
        records = await results_of(stack, {e.id for e in events})
        assert len(records) == count
        for message in messages:
            assert len(await stack.ai.calls_for(message)) == 1, message  # step 1: paid once
            answered = await stack.ai.calls_for(draft_prompt(message))
            assert [c["status"] for c in answered].count(200) == 1  # step 2: answered once
        log = worker.log_text()
        assert log.count("from the answer journal (paid before the restart)") == count
