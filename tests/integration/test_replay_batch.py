"""``hookstream replay --batch`` against the real broker and the AI simulator's batch APIs.

The enriched topic holds events of two flows: ``feedback-triage`` on an OpenAI-kind provider,
``payment-followup`` on an Anthropic-kind one, both the simulator (its ``/v1/batches`` and
``/v1/messages/batches``). A batch replay must submit one job per provider, one request per
event and none twice, write one result per event in per-key order at half the synchronous
price, resume the same jobs after a kill -9, and dead-letter the lines that failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.events import CloudEvent, EnrichedEvent
from schemas.headers import REPLAY_HEADER
from schemas.topics import Topics
from streams.kafka.admin import create_topics, ensure_topics
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sims import AISimHandle, running_ai_sim
from tests.support.sinkstack import run_cli, wait_until
from tests.support.stack import EXAMPLE_CONFIG, REPO_ROOT, SECRETS, Proc

pytestmark = pytest.mark.asyncio(loop_scope="module")
INPUT_USD, OUTPUT_USD = 2.0, 8.0  # per million tokens
KEYS = ("cus_a", "cus_b", "cus_c", "cus_d")
PER_FLOW = 20


@dataclass
class Case:
    config: HookstreamConfig
    path: Path
    env: dict[str, str]
    topics: Topics
    sim: AISimHandle
    events: list[EnrichedEvent]
    workdir: Path

    def args(self, *extra: str) -> list[str]:
        return [
            "replay",
            "-c",
            str(self.path),
            "--topic",
            "enriched",
            "--from",
            "0",
            "--yes",
            "--no-progress",
            "--batch",
            "--poll-s",
            "0.05",
            *extra,
        ]

    async def batch_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.sim.request_json("GET", "/_sim/batch/stats")
        return result


def _config(workdir: Path, base_url: str) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    prices = {"sim-1": {"input_usd_per_mtok": INPUT_USD, "output_usd_per_mtok": OUTPUT_USD}}
    openai = data["providers"][0]
    openai.update(base_url=base_url, prices=prices)
    claude = {**openai, "name": "claude", "kind": "anthropic"}
    data["providers"].append(claude)
    data["flows"][1]["ai"]["provider"] = "claude"
    path = workdir / "flows.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _enriched(flow: str, n: int) -> EnrichedEvent:
    key = KEYS[n % len(KEYS)]
    if flow == "feedback-triage":
        data: dict[str, Any] = {"customer_id": key, "ticket_id": f"T{n}", "message": f"bug {n}"}
        source, type_ = "helpdesk", "ticket.created"
    else:
        data = {"data": {"customer": key, "description": f"refund {n} failed"}}
        source, type_ = "payments", "payment.failed"
    event = CloudEvent(
        id=f"{flow}-{n}-{uuid.uuid4().hex[:8]}",
        source=source,
        type=type_,
        time=datetime.now(UTC),
        data=data,
        partitionkey=key,
        traceid=uuid.uuid4().hex,
    )
    return EnrichedEvent(flow=flow, event=event, enrichment={"customer": {"tier": "gold"}})


@pytest_asyncio.fixture(loop_scope="module")
async def case(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Case]:
    """A fresh prefix, the enriched topic filled, and a simulator of its own per test."""
    workdir = tmp_path_factory.mktemp("replay-batch")
    prefix = f"rb-{uuid.uuid4().hex[:8]}"
    env = {
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    async with running_ai_sim() as sim:
        path = _config(workdir, sim.base_url)
        config = load_config(path, env=env)
        topics = Topics(prefix)
        await create_topics(
            config.kafka,
            {topics.enriched: {}, topics.results: {}, topics.dlq: {}},
            partitions=2,
        )
        events = [
            _enriched(flow, n)
            for n in range(PER_FLOW)
            for flow in ("feedback-triage", "payment-followup")
        ]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                key = event.event.partitionkey.encode()
                await producer.send_and_wait(
                    topics.enriched, event.model_dump_json().encode(), key=key
                )
        finally:
            await producer.stop()
        yield Case(config, path, env, topics, sim, events, workdir)


def _sync_cost_usd(usage: dict[str, int]) -> float:
    return (usage["prompt_tokens"] * INPUT_USD + usage["completion_tokens"] * OUTPUT_USD) / 1e6


async def _results(
    kafka_bootstrap: str, case: Case
) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    return [
        (orjson.loads(r.value or b""), dict(r.headers))
        for r in await read_all(kafka_bootstrap, case.topics.results)
    ]


def _assert_in_key_order(
    case: Case, results: list[tuple[dict[str, Any], dict[str, bytes]]]
) -> None:
    written: dict[str, list[str]] = defaultdict(list)
    for value, _ in results:
        written[value["event"]["partitionkey"]].append(value["event"]["id"])
    sent: dict[str, list[str]] = defaultdict(list)
    for event in case.events:
        sent[event.event.partitionkey].append(event.event.id)
    assert written == sent


async def test_one_job_per_provider_one_paid_request_per_event(
    kafka_bootstrap: str, case: Case
) -> None:
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    assert "(batch): window 40" in out
    stats = await case.batch_stats()
    assert stats["jobs_submitted"] == {"openai": 1, "anthropic": 1}
    assert stats["paid_requests"] == {"openai": PER_FLOW, "anthropic": PER_FLOW}
    assert stats["custom_ids_submitted_twice"] == []
    assert (await case.sim.stats())["requests"] == 0  # nothing through the synchronous API
    results = await _results(kafka_bootstrap, case)
    assert len(results) == 2 * PER_FLOW
    _assert_in_key_order(case, results)
    for value, headers in results:
        assert headers[REPLAY_HEADER].startswith(b"batch-")
        assert value["provider"] == ("default" if value["flow"] == "feedback-triage" else "claude")
        assert value["cost_usd"] == pytest.approx(_sync_cost_usd(value["usage"]) / 2)
        assert value["cost_usd"] > 0
    # --batch answers the AI stage's input only: another topic is refused before anything.
    args = case.args()
    args[args.index("enriched")] = "events"
    code, _, err = await run_cli(*args, env=case.env)
    assert code == 2
    assert f"replay --topic enriched ({case.topics.enriched}), not {case.topics.events}" in err
    # The same command again: the journal says it finished; nothing is submitted.
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    assert "already finished" in out
    assert (await case.batch_stats())["jobs_submitted"] == {"openai": 1, "anthropic": 1}


async def _journal_jobs(kafka_bootstrap: str, case: Case) -> list[dict[str, Any]]:
    try:
        records = await read_all(kafka_bootstrap, case.topics.replay_jobs)
    except Exception:  # noqa: BLE001 - the topic is not there yet
        return []
    return [n for n in (orjson.loads(r.value or b"") for r in records) if n["kind"] == "job"]


async def test_a_replay_killed_after_submitting_resumes_the_same_jobs(
    kafka_bootstrap: str, case: Case
) -> None:
    # Jobs that will not end on their own while the first run waits on them.
    await case.sim.request_json("POST", "/_sim/batch/config", json={"latency_s": 3600.0})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli.main",
        *case.args(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=case.env,
    )
    try:
        jobs = await wait_until(
            lambda: _jobs_of_both(kafka_bootstrap, case), timeout_s=60.0, poll_s=0.1
        )
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert await read_all(kafka_bootstrap, case.topics.results) == []
    await case.sim.request_json("POST", "/_sim/batch/config", json={"latency_s": 0.0})
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    assert f"{2 * PER_FLOW} resumed from earlier job(s)" in out
    assert "0 request(s) submitted" in out
    stats = await case.batch_stats()
    assert stats["jobs_submitted"] == {"openai": 1, "anthropic": 1}
    assert stats["lines_submitted"] == {"openai": PER_FLOW, "anthropic": PER_FLOW}
    assert stats["paid_requests"] == {"openai": PER_FLOW, "anthropic": PER_FLOW}
    assert stats["custom_ids_submitted_twice"] == []
    assert sorted(j["id"] for j in stats["jobs"]) == sorted(j["job_id"] for j in jobs)
    results = await _results(kafka_bootstrap, case)
    assert len(results) == 2 * PER_FLOW
    _assert_in_key_order(case, results)


async def _jobs_of_both(kafka_bootstrap: str, case: Case) -> list[dict[str, Any]] | None:
    jobs = await _journal_jobs(kafka_bootstrap, case)
    return jobs if {j["provider"] for j in jobs} == {"default", "claude"} else None


async def test_failed_and_invalid_lines_go_to_the_dlq_with_their_error(
    kafka_bootstrap: str, case: Case
) -> None:
    knobs = {"fail_rate": 0.2, "invalid_rate": 0.15, "seed": 7}
    await case.sim.request_json("POST", "/_sim/batch/config", json=knobs)
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    results = await _results(kafka_bootstrap, case)
    letters = await read_all(kafka_bootstrap, case.topics.dlq)
    assert len(results) + len(letters) == 2 * PER_FLOW
    headers = [dict(r.headers) for r in letters]
    classes = {h["hookstream-dlq-error_class"].decode() for h in headers}
    assert classes == {"RemoteError", "InvalidModelOutput"}
    assert all(h["hookstream-dlq-stage"] == b"ai" for h in headers)
    assert all(h["hookstream-dlq-original_topic"] == case.topics.enriched.encode() for h in headers)
    failed = sum(h["hookstream-dlq-error_class"] == b"RemoteError" for h in headers)
    stats = await case.batch_stats()
    # Paid: every line answered (valid or not); the failed ones were not.
    assert sum(stats["paid_requests"].values()) == 2 * PER_FLOW - failed
    assert f"{len(letters)} dead-lettered" in out
    # Each dead letter is the enriched record byte for byte, so a redrive replays it.
    sent = {e.event.id for e in case.events}
    assert {orjson.loads(r.value or b"")["event"]["id"] for r in letters} <= sent


async def test_results_over_the_results_topics_limit_are_dead_lettered(
    kafka_bootstrap: str, case: Case
) -> None:
    # The results topic's max.message.bytes lowered under every result: the broker would
    # refuse them all, and the replay failed for good (MessageSizeTooLargeError); now each is
    # a dead letter saying so, and the replay ends.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, case.topics.results, {"max.message.bytes": "500"}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()
    code, _, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    assert await read_all(kafka_bootstrap, case.topics.results) == []
    letters = await read_all(kafka_bootstrap, case.topics.dlq)
    assert len(letters) == 2 * PER_FLOW
    messages = {r.headers["hookstream-dlq-error_message"].decode() for r in letters}
    assert all("max.message.bytes is 500" in m for m in messages), messages
    assert {r.headers["hookstream-dlq-error_class"] for r in letters} == {b"RecordTooLarge"}
    # Paid for: each answer is kept in the answer cache, so a redrive does not pay again.
    cached = await read_all(kafka_bootstrap, case.topics.ai_cache)
    assert len({r.key for r in cached}) == 2 * PER_FLOW


async def test_expired_jobs_dead_letter_every_event_and_cost_nothing(
    kafka_bootstrap: str, case: Case
) -> None:
    await case.sim.request_json("POST", "/_sim/batch/config", json={"expire": True})
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err + out
    assert f"{2 * PER_FLOW} dead-lettered" in out
    assert await read_all(kafka_bootstrap, case.topics.results) == []
    letters = await read_all(kafka_bootstrap, case.topics.dlq)
    assert len(letters) == 2 * PER_FLOW
    messages = {dict(r.headers)["hookstream-dlq-error_message"].decode() for r in letters}
    assert all("expired" in m for m in messages), messages
    stats = await case.batch_stats()
    assert sum(stats["paid_requests"].values()) == 0
    assert {j["status"] for j in stats["jobs"]} == {"expired", "ended"}


@pytest.mark.parametrize(
    ("flow", "api"), [("feedback-triage", "openai"), ("payment-followup", "anthropic")]
)
async def test_a_replay_killed_before_it_learnt_the_job_id_finds_the_job(
    kafka_bootstrap: str, case: Case, flow: str, api: str
) -> None:
    # The job exists at once, its id comes back only after 5 s: the run is killed before.
    await case.sim.request_json("POST", "/_sim/batch/config", json={"create_delay_s": 5.0})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli.main",
        *case.args("--flow", flow),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=case.env,
    )

    async def created() -> bool:
        return bool((await case.batch_stats())["jobs_submitted"])

    try:
        await wait_until(created, timeout_s=60.0, poll_s=0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    assert await _journal_jobs(kafka_bootstrap, case) == []  # its id never reached Kafka
    await case.sim.request_json("POST", "/_sim/batch/config", json={"create_delay_s": 0.0})
    code, out, err = await run_cli(*case.args("--flow", flow), env=case.env)
    assert code == 0, err
    assert "(1 found by listing the provider's jobs)" in out
    assert "0 request(s) submitted" in out
    stats = await case.batch_stats()
    assert stats["jobs_submitted"] == {api: 1}
    assert stats["custom_ids_submitted_twice"] == []
    results = await _results(kafka_bootstrap, case)
    assert len(results) == PER_FLOW
    assert {value["flow"] for value, _ in results} == {flow}


async def test_a_synchronous_replay_after_a_batch_replay_is_answered_from_the_ai_cache(
    kafka_bootstrap: str, case: Case
) -> None:
    """The batch replay's paid answers go to the answer cache as the AI stage writes them:
    a synchronous replay of the same window, answered by a worker, calls no model."""
    code, out, err = await run_cli(*case.args(), env=case.env)
    assert code == 0, err
    assert f"({2 * PER_FLOW} answer(s) added to the AI cache)" in out
    batch = {value["event"]["id"]: value for value, _ in await _results(kafka_bootstrap, case)}
    synchronous = case.args()[: case.args().index("--batch")]
    code, out, err = await run_cli(*synchronous, env=case.env)
    assert code == 0, err
    await ensure_topics(case.config.kafka)  # the worker's other topics (events, receipts…)
    worker = Proc(
        "worker",
        ["worker", "-c", str(case.path), "-l", "info"],
        {**case.env, "HOOKSTREAM_STATE_DIR": str(case.workdir / "state")},
        case.workdir / "worker.log",
    )
    await worker.start()
    try:
        # The worker answers the window's records and their replayed copies: 80 more results.
        def answered(found: list[Record]) -> bool:
            return len(found) >= 3 * len(case.events)

        await wait_for_records(kafka_bootstrap, case.topics.results, answered, timeout_s=90)
    finally:
        assert await worker.stop() == 0
    assert (await case.sim.stats())["requests"] == 0  # no model call: every answer cached
    stats = await case.batch_stats()
    assert stats["paid_requests"] == {"openai": PER_FLOW, "anthropic": PER_FLOW}
    later = [
        value
        for value, headers in await _results(kafka_bootstrap, case)
        if not headers.get(REPLAY_HEADER, b"").startswith(b"batch-")
    ]
    assert len(later) == 2 * len(case.events)
    for value in later:
        assert value["cached"] is True
        assert value["output"] == batch[value["event"]["id"]]["output"]
        assert value["provider"] == batch[value["event"]["id"]]["provider"]
