"""hookstream against a secured broker: SASL_SSL (SCRAM), mutual TLS and SASL_PLAINTEXT, end
to end.

The broker is the real Apache Kafka from ``scripts/kafka up --secure``, started by this module
(once per session, its own state dir and ports) so ``make test`` and CI need nothing else. The
gateway, worker and sinks reach it only through its SASL_SSL listener (the config names no
other), so every record on the way proves that each client took the TLS and SASL settings from
``streams.kafka.connection``. Then the operators' tools (replay, DLQ redrive), the
Publisher/Subscriber client, and the refusals: each wrong setting fails at start, in one line
naming its cause, without the password. ``publish`` and ``tail`` make a round trip with each
other SASL variant (SASL_PLAINTEXT, SCRAM-SHA-256), and refuse a wrong password in one line.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from pydantic import SecretStr

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, KafkaAccessDenied
from streams.client import Publisher, Subscriber, make_event
from streams.kafka.admin import create_topics, ensure_topics
from streams.kafka.producer import KafkaWriter
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.secure_kafka import PASSWORD_ENV, SecureKafka, secure_broker
from tests.support.sinkstack import run_cli
from tests.support.stack import EXAMPLE_CONFIG, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    with secure_broker(tmp_path_factory.mktemp("secure-kafka")) as kafka:
        yield kafka


def secured_config(
    kafka: SecureKafka,
    path: Path,
    protocol: str = "SASL_SSL",
    mechanism: str = "SCRAM-SHA-512",
) -> Path:
    """The example config with a SASL listener's settings in its ``kafka:`` block."""
    text = EXAMPLE_CONFIG.read_text()
    assert "\nkafka:\n" in text
    block = kafka.config_block(protocol, mechanism)
    path.write_text(text.replace("\nkafka:\n", "\nkafka:\n" + block, 1))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    secure_kafka: SecureKafka, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("secured-stack")
    config = secured_config(secure_kafka, workdir / "flows.yaml")
    async with running_stack(
        secure_kafka.sasl_ssl,
        workdir,
        config_path=config,
        extra_env={PASSWORD_ENV: secure_kafka.password},
    ) as running:
        yield running


def _ids(records: list[Record]) -> set[str]:
    return {r.json()["event"]["id"] for r in records}


def _feedback(n: int) -> dict[str, str]:
    return {
        "event": "ticket.created",
        "ticket_id": f"T-{uuid.uuid4().hex[:8]}",
        "customer_id": f"cus_s{n}",
        "message": f"Secured hello {n} ({uuid.uuid4().hex[:8]}): the export is broken.",
    }


async def test_webhooks_reach_the_crm_through_sasl_ssl(
    stack: Stack, secure_kafka: SecureKafka
) -> None:
    sent = []
    for n in range(3):
        webhook_id = f"wh-{uuid.uuid4().hex}"
        status, answer, _ = await stack.post("helpdesk", _feedback(n), webhook_id=webhook_id)
        assert status == 202, answer
        sent.append(f"helpdesk/{webhook_id}")
    updates = await stack.crm.wait_for_updates(len(sent), timeout_s=90)
    assert {u["idempotency_key"].rsplit("/", 2)[0] for u in updates} >= set(sent)
    # Read back over SASL_SSL by the test's helper too: the results are on the secured broker.
    settings = secure_kafka.sasl(topic_prefix=stack.prefix)
    results = await read_all(settings, stack.topic("results"))
    assert {f"helpdesk/{r.json()['event']['id']}" for r in results} >= set(sent)
    for name in ("gateway", "worker", "sinks"):
        assert secure_kafka.password not in stack.procs[name].log_text(), name


async def test_publisher_and_subscriber_over_sasl_ssl(
    stack: Stack, secure_kafka: SecureKafka
) -> None:
    settings = secure_kafka.sasl(topic_prefix=stack.prefix)
    event_id = f"client-{uuid.uuid4().hex}"
    async with Publisher(settings=settings) as publisher:
        await publisher.publish(
            _feedback(9), source="helpdesk", type="ticket.created", key="cus_s9", id=event_id
        )
    subscriber = Subscriber(group_id=f"g-{uuid.uuid4().hex[:8]}", settings=settings)
    async with subscriber, asyncio.timeout(90):
        async for result in subscriber:
            if result.event.id == event_id:
                break
    assert result.event.id == event_id


async def test_dlq_redrive_over_sasl_ssl(stack: Stack, secure_kafka: SecureKafka) -> None:
    settings = secure_kafka.sasl(topic_prefix=stack.prefix)
    await stack.ai.configure(rate_malformed=1.0)
    events = [
        make_event(
            _feedback(n), source="helpdesk", type="ticket.created", key=f"cus_d{n}",
            id=f"dlq-{uuid.uuid4().hex}",
        )
        for n in (1, 2)
    ]  # fmt: skip
    ids = {e.id for e in events}
    try:
        async with Publisher(settings=settings) as publisher:
            await publisher.publish_many(events)
        await wait_for_records(
            settings, stack.topic("dlq"), lambda rs: _ids(rs) >= ids, timeout_s=120
        )
    finally:
        await stack.ai.configure(rate_malformed=0.0)
    code, out, err = await run_cli(
        "dlq", "redrive", "-c", str(stack.config_path), "--stage", "ai", env=stack.env
    )
    assert code == 0, err
    assert "redrove 2;" in err
    await wait_for_records(
        settings, stack.topic("results"), lambda rs: _ids(rs) >= ids, timeout_s=120
    )
    assert secure_kafka.password not in out + err


async def test_replay_over_sasl_ssl(stack: Stack, secure_kafka: SecureKafka) -> None:
    settings = secure_kafka.sasl(topic_prefix=stack.prefix)
    start = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.02)  # a window bound strictly before the first record's timestamp
    events = [
        make_event(
            _feedback(n), source="helpdesk", type="ticket.created", key=f"cus_r{n}",
            id=f"replay-{uuid.uuid4().hex}",
        )
        for n in (1, 2)
    ]  # fmt: skip
    ids = {e.id for e in events}
    async with Publisher(settings=settings) as publisher:
        await publisher.publish_many(events)
    await asyncio.sleep(0.02)
    end = datetime.now(UTC).isoformat()
    await wait_for_records(settings, stack.topic("results"), lambda rs: _ids(rs) >= ids)
    code, out, err = await run_cli(
        "replay", "-c", str(stack.config_path), "--no-progress", "--topic", "events",
        "--from", start, "--to", end, "--yes", env=stack.env,
    )  # fmt: skip
    assert code == 0, err
    assert "replayed 2" in out, out
    replayed = await wait_for_records(
        settings,
        stack.topic("results"),
        lambda rs: _ids([r for r in rs if "hookstream-replay" in r.headers]) >= ids,
    )
    assert _ids([r for r in replayed if "hookstream-replay" in r.headers]) == ids
    assert secure_kafka.password not in out + err


async def test_mutual_tls_writes_and_creates_topics(secure_kafka: SecureKafka) -> None:
    settings = secure_kafka.mutual_tls()
    topic = f"mtls-{uuid.uuid4().hex[:10]}"
    assert await create_topics(settings, {topic: {}}, partitions=1) == [topic]
    async with KafkaWriter(settings) as writer:
        await writer.send(topic, b"over mutual TLS")
    assert [r.value for r in await read_all(settings, topic)] == [b"over mutual TLS"]


SASL_VARIANTS = [
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-256"),
]


@pytest.mark.parametrize(("protocol", "mechanism"), SASL_VARIANTS)
async def test_publish_and_tail_round_trip_over_each_sasl_variant(
    secure_kafka: SecureKafka, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    """The CLI's publish and tail through one listener and mechanism (the config names no
    other); then a wrong password: exit code and one line naming the user, no password."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    config = secured_config(secure_kafka, tmp_path / "flows.yaml", protocol, mechanism)
    settings = secure_kafka.sasl(
        bootstrap_servers=secure_kafka.address(protocol),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        ssl_cafile=secure_kafka.ca if protocol == "SASL_SSL" else None,
        topic_prefix=prefix,
    )
    await ensure_topics(settings)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": secure_kafka.address(protocol),
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        PASSWORD_ENV: secure_kafka.password,
    }
    payload = _feedback(7)
    line = orjson.dumps(payload) + b"\n"
    code, out, err = await run_cli(
        "publish", "-c", str(config), "--source", "helpdesk", "-", env=env, stdin=line
    )
    assert code == 0, err
    code, out, err = await run_cli(
        "tail", "-c", str(config), "events", "--from-beginning", "--max", "1", "--jsonl",
        env=env,
    )  # fmt: skip
    assert code == 0, err
    [record] = [orjson.loads(row) for row in out.splitlines()]
    assert record["value"]["data"] == payload
    # The record is on the secured broker: read back through its plaintext listener.
    [plain] = await read_all(secure_kafka.plaintext, f"{prefix}.events")
    assert plain.json()["data"] == payload
    assert secure_kafka.password not in out + err

    env[PASSWORD_ENV] = "wrong-" + secure_kafka.password[:4]
    code, out, err = await run_cli(
        "publish", "-c", str(config), "--source", "helpdesk", "-", env=env, stdin=line
    )
    assert code != 0
    refusals = [row for row in err.splitlines() if "SASL authentication failed" in row]
    assert len(refusals) == 1, err
    assert f"for user {secure_kafka.user}" in refusals[0]
    assert secure_kafka.password not in out + err


# The refusals: each fails at start with one line naming the cause, never with the password.
REFUSALS: dict[str, tuple[Callable[[SecureKafka], KafkaSettings], str]] = {
    "wrong password": (
        lambda k: k.sasl(sasl_password=SecretStr("not-the-password")),
        "SASL authentication failed for user hookstream",
    ),
    "unknown user": (
        lambda k: k.sasl(sasl_username="mallory"),
        "SASL authentication failed for user mallory",
    ),
    "untrusted CA": (
        # The client certificate is signed by the CA, it is not one: nothing vouches for the
        # broker's certificate.
        lambda k: k.sasl(ssl_cafile=str(k.tls_dir / "client.pem")),
        "certificate of the broker at 127.0.0.1",
    ),
    "plaintext client on the TLS port": (
        lambda k: k.sasl(security_protocol="SASL_PLAINTEXT", ssl_cafile=None),
        "closed the connection without answering: it is probably a TLS listener",
    ),
    "plaintext, no login, on the TLS port": (
        lambda k: KafkaSettings(bootstrap_servers=k.sasl_ssl),
        "probably a TLS listener",
    ),
    "mutual TLS without a client certificate": (
        lambda k: k.mutual_tls(ssl_certfile=None, ssl_keyfile=None),
        "requires a client certificate",
    ),
    "TLS client on the plaintext port": (
        lambda k: k.sasl(bootstrap_servers=k.plaintext),
        "broke off the TLS handshake",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_client_fails_at_start_naming_the_cause(
    secure_kafka: SecureKafka, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, expected = REFUSALS[case]
    settings = make(secure_kafka)
    with pytest.raises(KafkaAccessDenied) as refused:
        async with asyncio.timeout(30), Publisher(settings=settings):
            pass
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message
    assert not refused.value.retriable
    assert secure_kafka.password not in message
    assert secure_kafka.password not in caplog.text


async def test_the_worker_stops_at_once_on_a_wrong_password(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    """Not retried for --wait-for-broker-s: a refused login cannot heal by waiting."""
    config = secured_config(secure_kafka, tmp_path / "flows.yaml")
    env = dict(os.environ)
    env.update(
        {PASSWORD_ENV: "wrong-" + secure_kafka.password[:4], "HOOKSTREAM_STATE_DIR": str(tmp_path)}
    )
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=secure_kafka.sasl_ssl,
        HELPDESK_WEBHOOK_SECRET="x",
        PAYMENTS_WEBHOOK_SECRET="y",
        AI_API_KEY="z",
    )
    code, out, err = await run_cli(
        "worker", "-c", str(config), "--wait-for-broker-s", "600", env=env
    )
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("SASL authentication failed for user hookstream" in line for line in lines), err
    assert secure_kafka.password not in out + err


async def test_an_unreachable_secured_broker_stays_retriable(secure_kafka: SecureKafka) -> None:
    """Nothing listening is not a refusal: the worker's --wait-for-broker-s still waits."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        settings = secure_kafka.sasl(bootstrap_servers=f"127.0.0.1:{port}")
        with pytest.raises(BrokerUnavailable) as failed:
            async with Publisher(settings=settings):
                pass
    assert not isinstance(failed.value, KafkaAccessDenied)
    assert failed.value.retriable
