"""``hookstream tail`` (short names, --jsonl, --key, a closed stdout) and ``hookstream sign``'s
curl command, run for real: the installed command against the shared broker and a gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from schemas.config import KafkaSettings
from streams.kafka.admin import create_topics
from tests.integration.gateway_config import SECRETS, write_config
from tests.integration.test_cli_errors import HOOKSTREAM, prefix_of
from tests.support.stack import Proc

KEYED = [(b"k1", {"n": 1}), (b"k2", {"n": 2}), (b"k1", {"n": 3})]


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, object]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            # One partition, so the order below is the order written.
            await producer.send_and_wait(
                topic, orjson.dumps(value), key=key, partition=0, headers=[("h", b"v")]
            )
    finally:
        await producer.stop()


async def run(*args: str, timeout_s: float = 120) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        HOOKSTREAM,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def dedupe_topic(tmp_path: Path, kafka_bootstrap: str) -> tuple[Path, str]:
    """A config and its ``<prefix>.dedupe`` topic (which the worker would create), holding
    KEYED; tail should find it by its short name."""
    config = write_config(tmp_path, kafka_bootstrap)
    topic = f"{prefix_of(config)}.dedupe"
    await create_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {topic: {}}, partitions=1)
    await produce(kafka_bootstrap, topic, KEYED)
    return config, topic


async def test_tail_jsonl_with_key_prints_one_object_per_line_of_that_key(
    dedupe_topic: tuple[Path, str],
) -> None:
    config, topic = dedupe_topic
    code, out, err = await run(
        "tail",
        "-c",
        str(config),
        "dedupe",
        "--from-beginning",
        "--jsonl",
        "--key",
        "k1",
        "--max",
        "2",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    shown = [orjson.loads(line) for line in lines]
    # k2's record sits between the two k1 records: the filter skipped it.
    assert [(s["key"], s["value"]) for s in shown] == [("k1", {"n": 1}), ("k1", {"n": 3})]
    for record in shown:
        assert set(record) == {
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "headers",
            "value",
        }
        assert (record["topic"], record["partition"], record["headers"]) == (topic, 0, {"h": "v"})
        assert record["timestamp"].endswith("Z")
    assert [s["offset"] for s in shown] == [0, 2]


async def test_tail_into_a_closed_pipe_exits_quietly(
    dedupe_topic: tuple[Path, str], kafka_bootstrap: str
) -> None:
    """``hookstream tail … | head -1``: head has gone; the next record tail writes finds the
    pipe closed, and tail exits 0 without a word (a traceback before)."""
    config, topic = dedupe_topic
    read_fd, write_fd = os.pipe()
    process = await asyncio.create_subprocess_exec(
        HOOKSTREAM,
        "tail",
        "-c",
        str(config),
        "dedupe",
        "--from-beginning",
        "--jsonl",
        stdout=write_fd,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
    )
    os.close(write_fd)
    assert process.stderr is not None
    # Read its first line, then close the pipe's only reading end, as head does.
    with os.fdopen(read_fd, "rb") as reader:
        first = await asyncio.wait_for(asyncio.to_thread(reader.readline), 60)
    assert orjson.loads(first)["value"] == {"n": 1}
    # Records written after it: tail, following, has to write them into the closed pipe.
    await produce(kafka_bootstrap, topic, [(b"k9", {"n": 9})] * 3)
    code = await asyncio.wait_for(process.wait(), 60)
    err = await process.stderr.read()
    assert (code, err.decode()) == (0, "")


async def test_tail_piped_into_head_by_a_shell_ends_cleanly(
    dedupe_topic: tuple[Path, str],
) -> None:
    """The same through a real shell pipeline, with ``--max`` so that tail ends after head."""
    config, _ = dedupe_topic
    pipeline = (
        f"set -o pipefail; {HOOKSTREAM} tail -c {config} dedupe --from-beginning --jsonl "
        "--max 3 | head -n 1"
    )
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        pipeline,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
    )
    out, err = await asyncio.wait_for(shell.communicate(), 120)
    assert (shell.returncode, err.decode()) == (0, "")
    assert orjson.loads(out)["value"] == {"n": 1}


async def test_tail_piped_into_head_ends_when_head_does_on_a_quiet_topic(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """``tail … results --from-beginning | head -1`` with one record: head exits after it, and
    no further record comes for tail's next write to find the pipe closed. tail watches its
    stdout for the reader going away and ends with 0 (it waited for ever before)."""
    config = write_config(tmp_path, kafka_bootstrap)
    topic = f"{prefix_of(config)}.results"
    await create_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), {topic: {}}, partitions=1)
    await produce(kafka_bootstrap, topic, [(b"k1", {"n": 1})])
    pipeline = (
        f"set -o pipefail; {HOOKSTREAM} tail -c {config} results --from-beginning --jsonl "
        "| head -n 1"
    )
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        pipeline,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
        start_new_session=True,  # its own process group, to end it all if it hangs
    )
    try:
        out, err = await asyncio.wait_for(shell.communicate(), 60)
    finally:
        if shell.returncode is None:
            os.killpg(shell.pid, signal.SIGKILL)
            await shell.wait()
    assert (shell.returncode, err.decode()) == (0, "")
    assert orjson.loads(out)["value"] == {"n": 1}


@pytest.fixture
async def gateway(tmp_path: Path, kafka_bootstrap: str) -> AsyncIterator[tuple[Path, str]]:
    """A gateway process on a free port; (its config, its base URL)."""
    config = write_config(tmp_path, kafka_bootstrap)
    proc = Proc(
        name="gateway",
        args=["gateway", "-c", str(config), "--port", "0"],
        env={**os.environ, **SECRETS},
        log_path=tmp_path / "gateway.log",
    )
    await proc.start()
    assert proc.url is not None
    try:
        yield config, proc.url
    finally:
        await proc.stop()


@pytest.mark.parametrize("source", ["gh", "generic", "sw"])
async def test_the_printed_curl_command_posts_a_body_with_newlines(
    gateway: tuple[Path, str], tmp_path: Path, source: str
) -> None:
    config, url = gateway
    body = tmp_path / "body.json"
    body.write_bytes(
        orjson.dumps(
            {"id": f"evt_{uuid.uuid4().hex}", "type": "ticket.created", "note": "a\nb"},
            option=orjson.OPT_INDENT_2,
        )
        + b"\n"
    )
    assert body.read_bytes().count(b"\n") > 3
    code, command, err = await run(
        "sign", "-c", str(config), "--source", source, "--url", url, str(body)
    )
    assert code == 0, err
    assert "--data-binary @" in command

    async def status_of(curl: str) -> str:
        shell = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            curl.rstrip() + " -o /dev/null -w '%{http_code}'",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(shell.communicate(), 60)
        return out.decode()

    assert await status_of(command) == "202"
    # What the command printed before: -d sends the body without its newlines, and the
    # signature over the file no longer matches what arrives.
    assert await status_of(command.replace("--data-binary", "-d")) == "401"
