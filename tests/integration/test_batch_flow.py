"""Flows with ``ai.mode: batch`` in a running deployment: gateway, worker, sinks, batcher.

``feedback-triage`` is a batch flow here. Its events must reach ``<prefix>.ai-batch`` with
their offsets committed by the worker (no one holds them while a job runs), be answered by one
job of the simulator's OpenAI Batch API (one paid line per event, none twice, even with the
batcher killed -9 after submitting), come out as results at the batch price in per-key order,
and reach the CRM through the sinks. A batcher stopped while its job is pending exits without
waiting for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer

from agents.ai.batch import batch_api_for
from agents.ai.provider import ChatRequest
from agents.ai.task import ProviderRuntime
from agents.outbound.http import new_session
from schemas.config_ai import ProviderConfig
from schemas.config_loader import load_config
from schemas.errors import ToolError
from schemas.events import CloudEvent, EnrichedEvent
from streams.cli.replay_batch_backend import BatchBackend
from streams.dev.ai_sim import analyse
from streams.kafka.admin import ensure_topics
from streams.ops.batcher import Batcher as OpsBatcher
from tests.support.kafka import committed_offsets, read_all
from tests.support.sims import running_ai_sim
from tests.support.sinkstack import run_cli, wait_until
from tests.support.stack import EXAMPLE_CONFIG, REPO_ROOT, SECRETS, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
INPUT_USD, OUTPUT_USD = 2.0, 8.0  # per million tokens
CUSTOMERS = ("cus_b1", "cus_b2", "cus_b3")
EVENTS = 12
BATCH_EXAMPLE = REPO_ROOT / "examples" / "flows-batch.yaml"


def _config(workdir: Path) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    prices = {"sim-1": {"input_usd_per_mtok": INPUT_USD, "output_usd_per_mtok": OUTPUT_USD}}
    data["providers"][0]["prices"] = prices
    data["flows"][0]["ai"]["mode"] = "batch"
    data.setdefault("worker", {})["batch"] = {"max_wait_s": 2, "max_requests": 1000, "poll_s": 0.1}
    path = workdir / "flows.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest_asyncio.fixture(loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("batch-flow")
    async with running_stack(kafka_bootstrap, workdir, config_path=_config(workdir)) as running:
        yield running


class Batcher:
    """``hookstream batcher`` as its own process, started and stopped (or killed) by tests."""

    def __init__(self, stack: Stack, name: str = "batcher") -> None:
        self.stack = stack
        self.log_path = stack.workdir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streams.cli.main",
                "batcher",
                "-c",
                str(self.stack.config_path),
                "-l",
                "info",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=REPO_ROOT,
                env=self.stack.env,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def signal(self, sig: int) -> int:
        assert self.process is not None
        os.kill(self.process.pid, sig)
        return await self.process.wait()


@pytest_asyncio.fixture(loop_scope="module")
async def batcher(stack: Stack) -> AsyncIterator[Batcher]:
    running = Batcher(stack)
    yield running
    if running.process is not None and running.process.returncode is None:
        await running.signal(signal.SIGKILL)


@pytest_asyncio.fixture(loop_scope="module")
async def second_batcher(stack: Stack) -> AsyncIterator[Batcher]:
    running = Batcher(stack, "batcher-2")
    yield running
    if running.process is not None and running.process.returncode is None:
        await running.signal(signal.SIGKILL)


async def _post_tickets(stack: Stack, count: int) -> list[tuple[str, str, str]]:
    """``count`` tickets over the customers; (webhook id, customer, message) in sent order."""
    sent = []
    for n in range(count):
        customer = CUSTOMERS[n % len(CUSTOMERS)]
        message = ("I love it, thanks!", "The export is broken again.", "Add dark mode?")[n % 3]
        message = f"{message} #{n}"
        body = {
            "event": "ticket.created",
            "ticket_id": f"T-{uuid.uuid4().hex[:8]}",
            "customer_id": customer,
            "message": message,
        }
        webhook_id = f"wh-{uuid.uuid4().hex}"
        status, answer, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
        assert status == 202, answer
        sent.append((webhook_id, customer, message))
    return sent


async def _queued(stack: Stack, count: int) -> bool:
    """``count`` requests on <prefix>.ai-batch, and the worker's offsets committed past every
    enriched record: the worker holds nothing while the batch job runs."""
    queued = await read_all(stack.bootstrap, stack.topic("ai-batch"))
    if len(queued) < count:
        return False
    enriched = await read_all(stack.bootstrap, stack.topic("enriched"))
    ends: dict[int, int] = {}
    for record in enriched:
        ends[record.partition] = record.offset + 1
    committed = await committed_offsets(
        stack.bootstrap, f"{stack.prefix}-worker", stack.topic("enriched")
    )
    return all(committed.get(p, -1) >= end for p, end in ends.items())


async def _journaled_jobs(stack: Stack) -> list[dict[str, Any]] | None:
    try:
        records = await read_all(stack.bootstrap, stack.topic("ai-batch-jobs"))
    except Exception:  # noqa: BLE001 - not created yet
        return None
    jobs = [n for n in (orjson.loads(r.value or b"") for r in records) if n["kind"] == "job"]
    return jobs or None


async def _sim_batch(stack: Stack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await stack.ai.request_json(method, path, **kwargs)
    return answer


async def test_a_batch_flow_is_answered_by_one_job_even_with_the_batcher_killed(
    stack: Stack, batcher: Batcher
) -> None:
    # Jobs that will not end while the first batcher waits on them.
    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 3600.0})
    sent = await _post_tickets(stack, EVENTS)
    await wait_until(lambda: _queued(stack, EVENTS), timeout_s=90.0, poll_s=0.2)
    assert (await stack.ai.stats())["requests"] == 0  # no synchronous call for a batch flow

    await batcher.start()
    jobs = await wait_until(lambda: _journaled_jobs(stack), timeout_s=60.0, poll_s=0.1)
    assert await batcher.signal(signal.SIGKILL) == -signal.SIGKILL
    assert await read_all(stack.bootstrap, stack.topic("results")) == []

    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 0.0})
    await batcher.start()
    updates = await stack.crm.wait_for_updates(EVENTS, timeout_s=90)

    stats = await _sim_batch(stack, "GET", "/_sim/batch/stats")
    assert stats["jobs_submitted"] == {"openai": 1}
    assert stats["lines_submitted"] == {"openai": EVENTS}
    assert stats["paid_requests"] == {"openai": EVENTS}
    assert stats["custom_ids_submitted_twice"] == []
    assert [j["id"] for j in stats["jobs"]] == [j["job_id"] for j in jobs]

    results = [
        orjson.loads(r.value or b"")
        for r in await read_all(stack.bootstrap, stack.topic("results"))
    ]
    assert len(results) == EVENTS
    order: dict[str, list[str]] = defaultdict(list)
    for value in results:
        order[value["event"]["partitionkey"]].append(value["event"]["id"])
        usage = value["usage"]
        sync_usd = (
            usage["prompt_tokens"] * INPUT_USD + usage["completion_tokens"] * OUTPUT_USD
        ) / 1e6
        assert value["cost_usd"] == pytest.approx(sync_usd / 2)
        assert value["cost_usd"] > 0
    expected: dict[str, list[str]] = defaultdict(list)
    for webhook_id, customer, _ in sent:
        expected[customer].append(webhook_id)
    assert dict(order) == dict(expected)  # per key, in the order the webhooks were sent

    # The sinks delivered each result once, per customer in the order sent.
    by_customer: dict[str, list[str]] = defaultdict(list)
    for update in updates:
        by_customer[update["customer_id"]].append(update["body"]["last_feedback_summary"])
    for customer in CUSTOMERS:
        wanted = [analyse(m).summary for _, c, m in sent if c == customer]
        assert by_customer[customer] == wanted
    assert await batcher.signal(signal.SIGTERM) == 0
    await _replayed_from_the_cache(stack, results)


async def _replayed_from_the_cache(stack: Stack, answered: list[dict[str, Any]]) -> None:
    """The batcher's answers are in the answer cache as the AI stage writes them: a
    synchronous replay of the window is answered by the worker from it (no batcher runs now),
    with nothing queued for a job and no call."""
    config = str(stack.config_path)
    args = ("replay", "-c", config, "--topic", "enriched", "--from", "0", "--yes", "--no-progress")
    code, _, err = await run_cli(*args, env=stack.env)
    assert code == 0, err

    async def settled() -> tuple[list[Any], list[Any]] | None:
        results = await read_all(stack.bootstrap, stack.topic("results"))
        queued = await read_all(stack.bootstrap, stack.topic("ai-batch"))
        done = len(results) >= 2 * len(answered) or len(queued) > len(answered)
        return (results, queued) if done else None

    results, queued = await wait_until(settled, timeout_s=90.0, poll_s=0.2)
    assert len(queued) == len(answered)  # nothing queued again
    assert len(results) == 2 * len(answered)
    replayed = [v for v in (orjson.loads(r.value or b"") for r in results) if v["cached"]]
    outputs = {value["event"]["id"]: value["output"] for value in answered}
    assert len(replayed) == len(answered)
    assert {value["event"]["id"]: value["output"] for value in replayed} == outputs
    stats = await _sim_batch(stack, "GET", "/_sim/batch/stats")
    assert stats["lines_submitted"] == {"openai": len(answered)}
    assert (await stack.ai.stats())["requests"] == 0


async def test_a_batcher_stopped_with_a_job_pending_does_not_wait_for_it_and_resumes_it(
    stack: Stack, batcher: Batcher
) -> None:
    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 3600.0})
    await _post_tickets(stack, 3)
    await batcher.start()
    await wait_until(lambda: _journaled_jobs(stack), timeout_s=90.0, poll_s=0.1)
    # A job of an hour is pending: the stop returns without it (the journal keeps it).
    assert await batcher.signal(signal.SIGTERM) == 0
    assert await read_all(stack.bootstrap, stack.topic("results")) == []
    # Started again (jobs now quick), with 2 more requests queued: the pending job is
    # resumed, the new requests make a second job, and nothing is submitted twice.
    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 0.0})
    await _post_tickets(stack, 2)
    await wait_until(lambda: _queued(stack, 5), timeout_s=90.0, poll_s=0.2)
    await batcher.start()

    async def answered() -> list[Any] | None:
        results = await read_all(stack.bootstrap, stack.topic("results"))
        return results if len(results) >= 5 else None

    results = await wait_until(answered, timeout_s=90.0, poll_s=0.2)
    assert len(results) == 5
    stats = await _sim_batch(stack, "GET", "/_sim/batch/stats")
    assert stats["jobs_submitted"] == {"openai": 2}
    assert stats["lines_submitted"] == {"openai": 5}
    assert stats["custom_ids_submitted_twice"] == []
    assert await batcher.signal(signal.SIGTERM) == 0
    # The worker too stops with nothing pending in it: it holds no event of a batch flow.
    assert await stack.procs["worker"].stop() == 0


async def test_failed_and_invalid_lines_of_a_batch_flow_go_to_the_dlq(
    stack: Stack, batcher: Batcher
) -> None:
    knobs = {"fail_rate": 0.25, "invalid_rate": 0.25, "seed": 3, "latency_s": 0.0}
    await _sim_batch(stack, "POST", "/_sim/batch/config", json=knobs)
    sent = await _post_tickets(stack, EVENTS)
    await batcher.start()

    async def settled() -> tuple[list[Any], list[Any]] | None:
        results = await read_all(stack.bootstrap, stack.topic("results"))
        letters = await read_all(stack.bootstrap, stack.topic("dlq"))
        return (results, letters) if len(results) + len(letters) >= EVENTS else None

    results, letters = await wait_until(settled, timeout_s=90.0, poll_s=0.2)
    assert len(results) + len(letters) == EVENTS
    headers = [dict(r.headers) for r in letters]
    assert {h["hookstream-dlq-error_class"] for h in headers} == {
        b"RemoteError",
        b"InvalidModelOutput",
    }
    assert all(h["hookstream-dlq-stage"] == b"ai" for h in headers)
    assert all(h["hookstream-flow"] == b"feedback-triage" for h in headers)
    assert all(
        h["hookstream-dlq-original_topic"] == stack.topic("ai-batch").encode() for h in headers
    )
    ids = {orjson.loads(r.value or b"")["event"]["id"] for r in [*results, *letters]}
    assert ids == {webhook_id for webhook_id, _, _ in sent}
    assert await batcher.signal(signal.SIGTERM) == 0


async def test_a_batcher_before_the_topics_exist_says_so(kafka_bootstrap: str) -> None:
    prefix = f"nb-{uuid.uuid4().hex[:8]}"
    env = {
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    code, _, err = await run_cli("batcher", "-c", str(BATCH_EXAMPLE), env=env)
    assert code == 4, err
    assert f"topic '{prefix}.ai-batch' does not exist" in err
    assert "start it first" in err
    assert "Traceback" not in err


async def test_an_event_queued_twice_in_one_round_is_submitted_once(
    stack: Stack, batcher: Batcher
) -> None:
    # What a worker killed between its write to ai-batch and its dedupe mark leaves behind.
    twice, once = (
        EnrichedEvent(
            flow="feedback-triage",
            event=CloudEvent(
                id=f"wh-{uuid.uuid4().hex}",
                source="helpdesk",
                type="ticket.created",
                data={"customer_id": "cus_b1", "ticket_id": "T-1", "message": text},
                time=datetime.now(UTC),
                partitionkey="cus_b1",
                traceid=uuid.uuid4().hex,
            ),
        )
        for text in ("The export is broken.", "I love it!")
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for record in (twice, once, twice):
            value = record.model_dump_json().encode()
            await producer.send_and_wait(stack.topic("ai-batch"), value, key=b"cus_b1")
    finally:
        await producer.stop()
    await batcher.start()

    async def answered() -> list[Any] | None:
        results = await read_all(stack.bootstrap, stack.topic("results"))
        return results if len(results) >= 2 else None

    results = await wait_until(answered, timeout_s=90.0, poll_s=0.2)
    assert [orjson.loads(r.value or b"")["event"]["id"] for r in results] == [
        twice.event.id,
        once.event.id,
    ]
    stats = await _sim_batch(stack, "GET", "/_sim/batch/stats")
    assert stats["lines_submitted"] == {"openai": 2}
    assert stats["paid_requests"] == {"openai": 2}
    assert await batcher.signal(signal.SIGTERM) == 0


async def test_a_second_batcher_fences_the_first_and_no_request_is_submitted_twice(
    stack: Stack, batcher: Batcher, second_batcher: Batcher
) -> None:
    # The first batcher submits a job that will not end while both run.
    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 3600.0})
    await _post_tickets(stack, 6)
    await wait_until(lambda: _queued(stack, 6), timeout_s=90.0, poll_s=0.2)
    await batcher.start()
    jobs = await wait_until(lambda: _journaled_jobs(stack), timeout_s=60.0, poll_s=0.1)

    # A second one on the same prefix (a rolling update's overlap): it fences the first.
    await second_batcher.start()

    async def fenced() -> bool:
        return "any earlier batcher of this prefix is fenced" in second_batcher.log()

    await wait_until(fenced, timeout_s=60.0, poll_s=0.1)
    # New requests, seen by both: only the second may journal (then submit) a round.
    await _post_tickets(stack, 3)
    assert batcher.process is not None
    assert await batcher.process.wait() == 8
    first_log = batcher.log()
    assert "another hookstream batcher started on prefix" in first_log
    assert "Traceback" not in first_log

    await _sim_batch(stack, "POST", "/_sim/batch/config", json={"latency_s": 0.0})

    async def answered() -> list[Any] | None:
        results = await read_all(stack.bootstrap, stack.topic("results"))
        return results if len(results) >= 9 else None

    results = await wait_until(answered, timeout_s=90.0, poll_s=0.2)
    assert len({orjson.loads(r.value or b"")["event"]["id"] for r in results}) == 9
    stats = await _sim_batch(stack, "GET", "/_sim/batch/stats")
    assert stats["jobs_submitted"] == {"openai": 2}  # the first's job, resumed; the new one
    assert stats["lines_submitted"] == {"openai": 9}
    assert stats["paid_requests"] == {"openai": 9}
    assert stats["custom_ids_submitted_twice"] == []
    assert stats["jobs"][0]["id"] == jobs[0]["job_id"]
    assert len(results) == 9  # written once: the fenced one stopped before its results
    assert await second_batcher.signal(signal.SIGTERM) == 0


class _PausedBackend(BatchBackend):
    """The batcher's backend, its submissions held until ``go`` is set: a batcher paused
    between a job's journaled intent and its submission (a SIGSTOP cannot be aimed at those
    milliseconds from outside)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def submit(
        self, provider: str, lines: Sequence[tuple[str, Any]], label: str, intent_at: Any
    ) -> str:
        self.entered.set()
        await self.go.wait()
        return await super().submit(provider, lines, label, intent_at)


async def test_a_batcher_paused_between_its_intent_and_its_submission_submits_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Batcher A journals a job's intent and stops before submitting it; batcher B starts,
    fences A, waits its settle time (``batch_timeout_s`` 2: 4 s), finds no job by listing and
    submits the requests itself. A resumed must not create its job any more: the simulator
    sees one job, each request once."""
    prefix = f"bp-{uuid.uuid4().hex[:8]}"
    env = {
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    async with running_ai_sim() as ai, new_session() as session:
        data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        data["providers"][0].update(base_url=ai.base_url, batch_timeout_s=2)
        data["flows"][0]["ai"]["mode"] = "batch"
        data["worker"] = {"batch": {"max_wait_s": 0.2, "max_requests": 1000, "poll_s": 0.1}}
        path = tmp_path / "flows.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path, env=env)
        await ensure_topics(config.kafka)
        queued = [_ticket(f"Paused batcher #{n}.") for n in range(5)]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for record in queued:
                value = record.model_dump_json().encode()
                await producer.send_and_wait(f"{prefix}.ai-batch", value, key=b"cus_b1")
        finally:
            await producer.stop()

        runtimes = {p.name: ProviderRuntime.build(p, session) for p in config.providers}
        backend = _PausedBackend(config, runtimes, session)
        first = asyncio.create_task(OpsBatcher(config, backend).run(asyncio.Event()))
        await _entered_or_ended(backend, first)  # its intent is on the journal
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "streams.cli.main", "batcher", "-c", str(path), "-l", "info"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
        )
        try:

            async def answered() -> list[Any] | None:
                results = await read_all(kafka_bootstrap, f"{prefix}.results")
                return results if len(results) >= len(queued) else None

            results = await wait_until(answered, timeout_s=90.0, poll_s=0.2)
            backend.go.set()  # A goes on, far past its intent
            with pytest.raises(ToolError) as stopped:
                await asyncio.wait_for(first, 60)
        finally:
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0
        stats = await ai.request_json("GET", "/_sim/batch/stats")
        assert stats["jobs_submitted"] == {"openai": 1}
        assert stats["lines_submitted"] == {"openai": len(queued)}
        assert stats["custom_ids_submitted_twice"] == []
        assert "not created" in str(stopped.value)  # A's own refusal, before any fence
        ids = [orjson.loads(r.value or b"")["event"]["id"] for r in results]
        assert sorted(ids) == sorted(r.event.id for r in queued)


async def _entered_or_ended(backend: _PausedBackend, batcher: asyncio.Task[Any]) -> None:
    """Until the batcher has reached its submission; a batcher that ends first fails the test
    with its own error at once (waiting for the submission alone turned its error into a
    TimeoutError 60 s later)."""
    entered = asyncio.create_task(backend.entered.wait())
    try:
        await asyncio.wait({entered, batcher}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    finally:
        entered.cancel()
    if backend.entered.is_set():
        return
    if batcher.done():
        batcher.result()  # its exception, raised here
        raise AssertionError("the batcher stopped before its submission, without an error")
    raise TimeoutError("the batcher reached no submission within 60 s")


def _ticket(text: str) -> EnrichedEvent:
    return EnrichedEvent(
        flow="feedback-triage",
        event=CloudEvent(
            id=f"wh-{uuid.uuid4().hex}",
            source="helpdesk",
            type="ticket.created",
            data={"customer_id": "cus_b1", "ticket_id": "T-1", "message": text},
            time=datetime.now(UTC),
            partitionkey="cus_b1",
            traceid=uuid.uuid4().hex,
        ),
    )


async def test_no_job_is_created_later_than_one_file_timeout_after_its_intent() -> None:
    """Both batch APIs refuse to create a job whose intent is older than one file timeout
    (what a batcher taking over relies on), and create it when it is not."""
    async with running_ai_sim() as ai, new_session() as session:
        lines = [("0_0", _REQUEST)]
        kinds: tuple[Literal["openai", "anthropic"], ...] = ("openai", "anthropic")
        apis = [
            batch_api_for(
                ProviderConfig(
                    name=kind, kind=kind, base_url=ai.base_url, model="sim-1", batch_timeout_s=5
                ),
                session,
            )
            for kind in kinds
        ]
        for api in apis:
            late = (time.monotonic() - 6, time.time() - 6)
            with pytest.raises(ToolError, match=r"not created: 6\.\d s since its intent"):
                await api.submit(lines, "late", late)
        assert (await ai.request_json("GET", "/_sim/batch/stats"))["jobs_submitted"] == {}
        for api in apis:
            await api.submit(lines, "in-time", (time.monotonic(), time.time()))
        stats = await ai.request_json("GET", "/_sim/batch/stats")
        assert stats["jobs_submitted"] == {"openai": 1, "anthropic": 1}


_REQUEST = ChatRequest(
    model="sim-1",
    system="Triage.",
    prompt="The export is broken.",
    schema_name="triage",
    schema={"type": "object", "properties": {"summary": {"type": "string"}}},
    temperature=0.0,
    max_tokens=64,
)
