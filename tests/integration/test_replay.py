"""``hookstream replay`` on the real broker, with a real worker and sink worker.

Three batches of events go through the pipeline; the middle one is replayed by time, the last
one by offsets. Exactly the events of each window are reprocessed, marked with their replay id,
the AI answers come from the cache (no model call: the flow is unchanged), the CRM sink
(``deliver_replays: true``) is updated again under a replay idempotency key, and the Slack sink
(``deliver_replays: false``) is not called.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from streams.client import Publisher, make_event
from tests.support.kafka import Record, committed_offsets, read_all, wait_for_records
from tests.support.sinkstack import run_cli, running_slack_sim, sinks_config, wait_until
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
CUSTOMER = "cus_007"  # one key: every event in one partition, so offsets mean batches
REPLAY = "hookstream-replay"
_REPLAY_LINE = re.compile(r"^replay (\w+): window (\d+), read (\d+), replayed (\d+)", re.M)


class ReplayStack:
    def __init__(self, stack: Stack, slack: Any) -> None:
        self.stack, self.slack = stack, slack
        self.partitions: set[int] = set()

    async def publish_batch(self, label: str, count: int = 3) -> list[str]:
        events = [
            make_event(
                {
                    "event": "ticket.created",
                    "ticket_id": f"T-{label}{n}",
                    "customer_id": CUSTOMER,
                    "message": f"Replay test, batch {label}, message {n}: {uuid.uuid4().hex}",
                },
                source="helpdesk",
                type="ticket.created",
                key=CUSTOMER,
                id=f"replay-{label}{n}-{uuid.uuid4().hex[:8]}",
            )
            for n in range(count)
        ]
        async with Publisher(
            bootstrap_servers=self.stack.bootstrap, topic_prefix=self.stack.prefix
        ) as publisher:
            for event in events:  # one by one: in order, timestamps in order
                self.partitions.add((await publisher.publish_event(event)).partition)
        return [e.id for e in events]

    async def replay(self, *args: str) -> tuple[int, str, str]:
        return await run_cli(
            "replay", "-c", str(self.stack.config_path), "--no-progress", *args, env=self.stack.env
        )


def _config(workdir: Path) -> Path:
    """The sinks test config without PostgreSQL: CRM delivers replays, Slack does not."""
    path = sinks_config(workdir, "unused", ssrf_sink=False)
    data = yaml.safe_load(path.read_text())
    feedback = data["flows"][0]
    feedback["sinks"] = [s for s in feedback["sinks"] if s["kind"] != "postgres"]
    for sink in feedback["sinks"]:
        sink["deliver_replays"] = sink["kind"] != "slack"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replays(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("replay")
    async with (
        running_slack_sim() as slack,
        running_stack(
            kafka_bootstrap,
            workdir,
            config_path=_config(workdir),
            roles=("worker", "sinks"),
            extra_env={"TEST_SLACK_WEBHOOK_URL": slack.webhook_url("support")},
        ) as stack,
    ):
        yield ReplayStack(stack, slack)


def _event_ids(records: list[Record]) -> list[str]:
    return [r.json()["event"]["id"] if "event" in r.json() else r.json()["id"] for r in records]


def _marked(records: list[Record], replay_id: str) -> list[Record]:
    return [r for r in records if r.headers.get(REPLAY) == replay_id.encode()]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


async def _check_replayed(
    rs: ReplayStack, replay_id: str, window: list[str], everything: list[str]
) -> None:
    """Exactly ``window`` was reprocessed under ``replay_id``, and delivered where it should."""
    stack = rs.stack
    events = _marked(await read_all(stack.bootstrap, stack.topic("events")), replay_id)
    assert sorted(_event_ids(events)) == sorted(window)

    def replayed_results(records: list[Record]) -> bool:
        return set(_event_ids(_marked(records, replay_id))) >= set(window)

    results = await wait_for_records(
        stack.bootstrap, stack.topic("results"), replayed_results, timeout_s=120
    )
    mine = _marked(results, replay_id)
    assert sorted(_event_ids(mine)) == sorted(window)  # each once, none from outside
    assert all(r.json()["cached"] for r in mine)  # answered by the AI cache
    live = [r for r in results if REPLAY not in r.headers]
    assert sorted(_event_ids(live)) == sorted(everything)  # no unmarked second result

    crm = stack.crm
    suffix = f"/feedback-triage/crm/replay/{replay_id}"

    async def crm_replays() -> list[dict[str, Any]]:
        found = [u for u in await crm.updates() if (u["idempotency_key"] or "").endswith(suffix)]
        return found if len(found) >= len(window) else []

    updates = await wait_until(crm_replays, timeout_s=120)
    assert sorted(u["idempotency_key"] for u in updates) == sorted(
        f"helpdesk/{i}{suffix}" for i in window
    )
    # The sink worker has consumed every replayed result (both sinks acked them) ...
    ends = {r.partition: r.offset + 1 for r in results}

    async def consumed() -> bool:
        offsets = await committed_offsets(
            stack.bootstrap, f"{stack.prefix}-sinks", stack.topic("results")
        )
        return all(offsets.get(p, -1) >= end for p, end in ends.items())

    await wait_until(consumed, timeout_s=120)
    # ... and Slack, which does not take replays, got the live messages only.
    slack_keys = [m["idempotency_key"] for m in await rs.slack.messages()]
    assert not [k for k in slack_keys if "/replay/" in (k or "")]
    assert sorted(slack_keys) == sorted(f"helpdesk/{i}/feedback-triage/slack" for i in everything)


async def test_replay_reprocesses_exactly_the_window(replays: ReplayStack) -> None:
    stack = replays.stack
    batches: dict[str, list[str]] = {}
    bounds: dict[str, str] = {}
    for label in ("a", "b", "c"):
        bounds[f"{label}-start"] = _now()
        await asyncio.sleep(0.02)
        batches[label] = await replays.publish_batch(label)
        await asyncio.sleep(0.02)
        bounds[f"{label}-end"] = _now()
        await asyncio.sleep(0.02)
    everything = [i for batch in batches.values() for i in batch]
    assert len(replays.partitions) == 1
    await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda rs: set(_event_ids(rs)) >= set(everything),
        timeout_s=120,
    )
    await wait_until(lambda: _crm_count(stack, everything, "/feedback-triage/crm"), timeout_s=120)
    calls = (await stack.ai.stats())["requests"]
    assert calls == len(everything)

    # Every answer is in the AI cache (the worker writes it after each result).
    await wait_for_records(
        stack.bootstrap,
        stack.topic("ai-cache"),
        lambda rs: len({r.key for r in rs}) >= len(everything),
        timeout_s=120,
    )
    # By time: the middle batch. Its estimate finds every answer in the cache: nothing to
    # pay, so it is not asked for (no --yes, no terminal) and the replay runs.
    window = ("--topic", "events", "--from", bounds["b-start"], "--to", bounds["b-end"])
    code, out, err = await replays.replay(*window)
    assert code == 0, err
    assert "3 record(s), 3 AI task(s): 3 from the AI cache, 0 model call(s)" in err
    assert "estimated cost $0.0000" in err
    match = _REPLAY_LINE.search(out)
    assert match is not None, out
    first_id = match.group(1)
    assert match.group(2, 3, 4) == ("3", "3", "3")
    await _check_replayed(replays, first_id, batches["b"], everything)

    # By offsets (the partition holds a, b, c, then the replayed b): the last batch, through
    # the filters, which every event passes.
    code, out, err = await replays.replay(
        "--topic", "events", "--from", "6", "--to", "9", "--yes",
        "--source", "helpdesk", "--flow", "feedback-triage",
    )  # fmt: skip
    assert code == 0, err
    # With --yes the estimate is printed all the same, in one line.
    estimates = [line for line in err.splitlines() if line.startswith("replay of ")]
    assert len(estimates) == 1, err
    assert "3 record(s), 3 AI task(s): 3 from the AI cache, 0 model call(s)" in estimates[0]
    match = _REPLAY_LINE.search(out)
    assert match is not None, out
    second_id = match.group(1)
    assert second_id != first_id
    await _check_replayed(replays, second_id, batches["c"], everything)

    # An unchanged flow: every replayed answer came from the cache, the model saw no new call.
    assert (await stack.ai.stats())["requests"] == calls


async def _crm_count(stack: Stack, ids: list[str], suffix: str) -> bool:
    keys = {u["idempotency_key"] for u in await stack.crm.updates()}
    return all(f"helpdesk/{i}{suffix}" in keys for i in ids)
