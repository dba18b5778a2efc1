"""``hookstream replay``'s cost estimate and its refused windows, on the real broker.

No worker runs: the test writes what a worker would have left behind. Six ticket events are on
the events topic; the AI answer cache (``<prefix>.ai-cache``) holds the answers of two of them,
under the key the worker's own AI task computes; the results topic holds the earlier results of
two others, with their usage; the last two have neither. With a price of $2 / $8 per million
prompt / completion tokens the estimate must say 2 from the cache, 4 model calls, and the
dollars of 2 calls at their earlier usage plus 2 at prompt characters / 4 + max_tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer

from agents.ai.task import AITask, ProviderRuntime, cache_entry
from schemas.config import HookstreamConfig, KafkaSettings
from schemas.config_loader import load_config
from schemas.events import AIResult, CloudEvent, EnrichedEvent, TokenUsage
from schemas.topics import Topics
from streams.kafka.admin import create_topics
from tests.support.kafka import delete_topics, read_all
from tests.support.sinkstack import run_cli
from tests.support.stack import EXAMPLE_CONFIG, SECRETS

pytestmark = pytest.mark.asyncio(loop_scope="module")
INPUT_USD, OUTPUT_USD = 2.0, 8.0  # per million tokens
FLOW = "feedback-triage"
EARLIER_USAGE = (300, 50)  # prompt, completion tokens of the earlier results


@dataclass
class Setup:
    config: HookstreamConfig
    path: Path
    env: dict[str, str]
    topics: Topics
    events: list[CloudEvent]

    async def replay(self, *args: str) -> tuple[int, str, str]:
        return await run_cli("replay", "-c", str(self.path), "--no-progress", *args, env=self.env)


def _event(n: int) -> CloudEvent:
    return CloudEvent(
        id=f"cost-{n}-{uuid.uuid4().hex[:8]}",
        source="helpdesk",
        type="ticket.created",
        time=datetime.now(UTC),
        data={"customer_id": "cus_1", "ticket_id": f"T{n}", "message": f"Message {n} " * n},
        partitionkey="cus_1",
        traceid=uuid.uuid4().hex,
    )


def _config(workdir: Path) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["providers"][0]["prices"] = {
        "sim-1": {"input_usd_per_mtok": INPUT_USD, "output_usd_per_mtok": OUTPUT_USD}
    }
    path = workdir / "flows.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def _write(settings: KafkaSettings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("replay-cost")
    prefix = f"cost-{uuid.uuid4().hex[:8]}"
    env = {
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    path = _config(workdir)
    config = load_config(path, env=env)
    topics = Topics(prefix)
    settings = config.kafka
    await create_topics(settings, {topics.events: {}, topics.results: {}}, partitions=2)
    await create_topics(settings, {topics.ai_cache: {"cleanup.policy": "compact"}}, partitions=1)
    events = [_event(n) for n in range(6)]
    flow = next(f for f in config.flows if f.name == FLOW)
    async with aiohttp.ClientSession() as session:
        runtimes = {p.name: ProviderRuntime.build(p, session) for p in config.providers}
        task = AITask(flow, runtimes, config.worker)  # the worker's own task: its cache keys
        records: list[tuple[str, bytes, bytes]] = []
        for n, event in enumerate(events):
            key = event.partitionkey.encode()
            records.append((topics.events, key, event.model_dump_json().encode()))
            result = AIResult(
                flow=FLOW,
                event=event,
                provider="default",
                model="sim-1",
                output={"sentiment": "neutral", "category": "other", "summary": "s"},
                usage=TokenUsage(
                    prompt_tokens=EARLIER_USAGE[0],
                    completion_tokens=EARLIER_USAGE[1],
                    total_tokens=sum(EARLIER_USAGE),
                ),
                latency_ms=1.0,
                attempts=1,
            )
            if n < 2:  # answered by the cache
                request = task.request_for(EnrichedEvent(flow=FLOW, event=event))
                entry = {"written_at": time.time(), "value": cache_entry(result)}
                records.append(
                    (topics.ai_cache, request.cache_key("default").encode(), orjson.dumps(entry))
                )
            elif n < 4:  # an earlier result on the results topic, not in the cache
                records.append((topics.results, key, result.model_dump_json().encode()))
    await _write(settings, records)
    yield Setup(config, path, env, topics, events)
    await delete_topics(kafka_bootstrap, [topics.events, topics.results, topics.ai_cache])


def _expected_usd(config: HookstreamConfig) -> tuple[float, int, int]:
    """Two calls at the earlier usage, two estimated from the prompt: $, prompt, completion."""
    ai = next(f for f in config.flows if f.name == FLOW).ai
    assert ai is not None
    prompt = 2 * EARLIER_USAGE[0]
    completion = 2 * EARLIER_USAGE[1]
    for n in (4, 5):
        prompt += (len(ai.system) + len(f"Message {n} " * n)) // 4 + 1
        completion += ai.max_tokens
    return (prompt * INPUT_USD + completion * OUTPUT_USD) / 1e6, prompt, completion


async def test_the_estimate_counts_cache_and_calls_and_prices_them(setup: Setup) -> None:
    usd, prompt, completion = _expected_usd(setup.config)
    # Without --yes and without a terminal to ask: the estimate, then nothing replayed.
    code, out, err = await setup.replay("--topic", "events", "--from", "0")
    assert code == 1, err
    assert "6 record(s), 6 AI task(s): 2 from the AI cache, 4 model call(s)" in err
    assert "(feedback-triage: 2 cached + 4 call(s))" in err
    # Both prices: the batch API's at the default batch_price_factor, half.
    assert (
        f"estimated cost ${usd:,.4f} (${usd / 2:,.4f} with --batch) for ~{prompt:,} prompt + "
        f"{completion:,} completion"
    ) in err
    assert "tokens of 2 call(s) from their earlier results' usage, 2 estimated as prompt" in err
    assert "not confirmed" in err
    assert out == ""
    assert len(await read_all(setup.env["KAFKA_BOOTSTRAP_SERVERS"], setup.topics.events)) == 6


async def test_with_yes_the_estimate_is_still_printed_in_one_line(setup: Setup) -> None:
    code, out, err = await setup.replay("--topic", "events", "--from", "0", "--to", "3", "--yes")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("replay of ")]
    assert len(lines) == 1, err
    # Offsets 0-2 of each of the 2 partitions: every event is on one partition (one key).
    assert "3 record(s), 3 AI task(s): 2 from the AI cache, 1 model call(s)" in lines[0]
    assert "replayed 3" in out
    # The replayed records are now on the topic too, marked.
    events = await read_all(setup.env["KAFKA_BOOTSTRAP_SERVERS"], setup.topics.events)
    assert sum("hookstream-replay" in r.headers for r in events) == 3


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (("--from", "5", "--to", "2"), "--from '5' is later than --to '2'"),
        (("--from", "4", "--to", "4"), "--from '4' is the same as --to '4'"),
        (
            ("--from", "2026-12-02T10:00Z", "--to", "2026-12-01T10:00Z"),
            "--from '2026-12-02T10:00Z' is later than --to '2026-12-01T10:00Z'",
        ),
        (("--from", "2026-12-01"), "--from '2026-12-01' is a date without a time"),
        (("--from", "0", "--to", "2026-12-01"), "--to '2026-12-01' is a date without a time"),
        (("--from", "yesterday"), "--from 'yesterday': give an offset"),
    ],
)
async def test_empty_or_ambiguous_windows_are_refused(
    setup: Setup, bounds: tuple[str, ...], message: str
) -> None:
    before = len(await read_all(setup.env["KAFKA_BOOTSTRAP_SERVERS"], setup.topics.events))
    code, out, err = await setup.replay("--topic", "events", *bounds, "--yes")
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    if "date without a time" in message:
        assert "2026-12-01T09:30Z" in err  # the accepted forms are shown
        assert "T00:00Z" in err  # and how to say midnight
    assert out == ""
    after = len(await read_all(setup.env["KAFKA_BOOTSTRAP_SERVERS"], setup.topics.events))
    assert after == before


async def test_a_window_past_10000_records_is_estimated_from_a_sample_and_replayed_whole(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """12,000 events: the estimate reads a sample of about 10,000 (streams.ops.replay.
    sample_windows), says so and scales its counts to the window; the replay copies all."""
    prefix = f"sample-{uuid.uuid4().hex[:8]}"
    env = {
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    path = _config(tmp_path)
    config = load_config(path, env=env)
    topics = Topics(prefix)
    await create_topics(config.kafka, {topics.events: {}}, partitions=4)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for n in range(12_000):
            event = _event(1).model_copy(update={"id": f"sample-{n}", "partitionkey": f"c{n % 97}"})
            await producer.send(topics.events, event.model_dump_json().encode(), key=b"c%d" % n)
        await producer.flush()
    finally:
        await producer.stop()
    try:
        setup = Setup(config, path, env, topics, [])
        code, out, err = await setup.replay("--topic", "events", "--from", "0", "--yes")
        assert code == 0, err
        line = next(line for line in err.splitlines() if line.startswith("replay of "))
        assert "~12,000 record(s), ~12,000 AI task(s): 0 from the AI cache" in line
        assert "12,000 model call(s)" in line
        sampled = int(line.split("priced from a sample of ")[1].split(" ")[0].replace(",", ""))
        assert 10_000 <= sampled < 10_100, line  # about PRICED_MAX, not the whole window
        assert "of the window's 12,000 records" in line
        assert "replayed 12,000" in out
    finally:
        await delete_topics(kafka_bootstrap, [topics.events])
