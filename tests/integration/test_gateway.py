"""Every answer of the gateway, against the real broker: 202 only once the event is on Kafka."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.broker import private_broker
from tests.support.kafka import read_all
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
PROBLEM = "application/problem+json"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    async with running_stack(kafka_bootstrap, workdir, roles=("gateway",)) as running:
        yield running


def ticket(customer: str = "cus_001") -> dict[str, Any]:
    return {"event": "ticket.created", "customer_id": customer, "message": "hello"}


async def events_with_id(stack: Stack, webhook_id: str) -> list[Any]:
    return [
        r
        for r in await read_all(stack.bootstrap, stack.topic("events"))
        if r.json()["id"] == webhook_id
    ]


async def test_accepted_webhook_is_on_the_topic_at_the_offset_given(gateway: Stack) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, answer, _ = await gateway.post("helpdesk", ticket("cus_042"), webhook_id=webhook_id)
    assert status == 202
    records = await events_with_id(gateway, webhook_id)
    assert [(r.partition, r.offset) for r in records] == [(answer["partition"], answer["offset"])]
    assert records[0].key == b"cus_042"
    assert records[0].headers["content-type"] == b"application/cloudevents+json"


async def test_timestamped_signature_and_payload_id(gateway: Stack) -> None:
    body = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment.failed",
        "data": {"customer": "cus_009", "description": "declined"},
    }
    status, answer, _ = await gateway.post("payments", body)
    assert status == 202
    assert answer["id"] == body["id"]
    assert answer["type"] == "payment.failed"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"X-Signature": "sha256=" + "0" * 64}, "no_signature_matched"),
        ({"X-Signature": "0" * 64}, "malformed_signature"),
        ({"X-Signature": "sha256=zz"}, "malformed_signature"),
    ],
)
async def test_bad_signature_is_401(gateway: Stack, headers: dict[str, str], code: str) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, answer, response_headers = await gateway.post(
        "helpdesk", ticket(), sign=False, headers={**headers, "X-Webhook-Id": webhook_id}
    )
    assert status == 401
    assert answer["code"] == code
    assert response_headers["Content-Type"].startswith(PROBLEM)
    assert await events_with_id(gateway, webhook_id) == []


async def test_missing_signature_names_the_header(gateway: Stack) -> None:
    status, answer, _ = await gateway.post("helpdesk", ticket(), sign=False)
    assert status == 401
    assert answer["code"] == "missing_signature"
    assert "X-Signature" in answer["detail"]


async def test_signature_with_the_wrong_secret_is_401(gateway: Stack) -> None:
    body = b'{"event":"ticket.created","customer_id":"cus_001"}'
    headers = gateway.signed_headers("helpdesk", body, secret="not-the-secret")
    status, answer, _ = await gateway.post("helpdesk", body=body, sign=False, headers=headers)
    assert status == 401
    assert answer["code"] == "no_signature_matched"
    assert "not-the-secret" not in str(answer)
    assert "test-helpdesk-secret" not in str(answer)


async def test_stale_timestamp_is_401(gateway: Stack) -> None:
    body = b'{"id":"evt_old","type":"payment.failed","data":{"customer":"cus_001"}}'
    headers = gateway.signed_headers("payments", body, timestamp=int(time.time()) - 3600)
    status, answer, _ = await gateway.post("payments", body=body, sign=False, headers=headers)
    assert status == 401
    assert answer["code"] == "timestamp_out_of_window"


async def test_unknown_source_is_404(gateway: Stack) -> None:
    status, answer, _ = await gateway.post("nosuchsource", ticket(), sign=False)
    assert status == 404
    assert answer["code"] == "unknown_source"
    assert "nosuchsource" in answer["detail"]


async def test_body_not_json_is_400(gateway: Stack) -> None:
    status, answer, _ = await gateway.post("helpdesk", body=b"{not json")
    assert status == 400
    assert answer["code"] == "invalid_json"


async def test_missing_partition_key_is_400(gateway: Stack) -> None:
    status, answer, _ = await gateway.post("helpdesk", {"event": "ticket.created"})
    assert status == 400
    assert answer["code"] == "missing_partition_key"
    assert "customer_id" in answer["detail"]


async def test_body_over_the_limit_is_413(gateway: Stack) -> None:
    big = b'{"customer_id":"cus_001","pad":"' + b"x" * (1024 * 1024) + b'"}'
    status, answer, _ = await gateway.post("helpdesk", body=big)
    assert status == 413
    assert answer["code"] == "payload_too_large"
    assert "1048576" in answer["detail"]


async def test_body_within_the_limit_but_over_kafkas_is_413_and_harmless(gateway: Stack) -> None:
    # max_body_bytes is 1 MiB, and so is Kafka's request size: the envelope tips it over.
    pad = 1024 * 1024 - 200
    big = b'{"customer_id":"cus_001","pad":"' + b"x" * pad + b'"}'
    status, answer, _ = await gateway.post("helpdesk", body=big)
    assert status == 413, answer
    assert answer["code"] == "payload_too_large"
    assert "message size limit" in answer["detail"]
    # The broker is fine: the next webhook is accepted, not refused as "broker unavailable".
    status, answer, _ = await gateway.post("helpdesk", ticket())
    assert status == 202, answer


async def test_wrong_content_type_is_415(gateway: Stack) -> None:
    status, answer, _ = await gateway.post(
        "helpdesk", body=b"customer_id=cus_001", content_type="application/x-www-form-urlencoded"
    )
    assert status == 415
    assert answer["code"] == "unsupported_media_type"


async def test_healthz(gateway: Stack) -> None:
    assert gateway.session is not None
    async with gateway.session.get(f"{gateway.gateway_url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def readiness(stack: Stack) -> tuple[int, str]:
    assert stack.session is not None
    async with stack.session.get(f"{stack.gateway_url}/readyz") as response:
        answer = await response.json(content_type=None)
        return response.status, answer.get("code") or answer.get("status")


async def test_broker_down_is_503_with_retry_after_then_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """While Kafka cannot take a write, senders are told to retry; never a 2xx that is not written.

    A broker of its own, stopped under a running gateway while concurrent senders post signed
    webhooks, then started again (same data): the gateway must answer 503 with Retry-After
    meanwhile, serve again without a restart, and every id it answered 2xx for must be on the
    topic, counted.
    """
    workdir: Path = tmp_path_factory.mktemp("gateway503")
    async with (
        private_broker(workdir / "broker") as broker,
        running_stack(
            broker.bootstrap,
            workdir,
            roles=("gateway",),
            extra_env={"HOOKSTREAM_PRODUCE_TIMEOUT_S": "2"},
        ) as stack,
    ):
        outcomes: list[tuple[str, int, str]] = []  # (id, status, phase)
        phase = "up"
        stop = asyncio.Event()

        async def sender() -> None:
            while not stop.is_set():
                webhook_id = f"wh-{uuid.uuid4().hex}"
                seen_phase = phase
                status, answer, headers = await stack.post(
                    "helpdesk", ticket(), webhook_id=webhook_id
                )
                if status == 503:
                    assert answer["code"] in ("broker_unavailable", "overloaded"), answer
                    assert int(headers["Retry-After"]) > 0
                else:
                    assert status == 202, answer
                outcomes.append((webhook_id, status, seen_phase))
                if status == 503:
                    await asyncio.sleep(0.05)

        senders = [asyncio.create_task(sender()) for _ in range(8)]
        try:

            async def until(status: int, in_phase: str, count: int) -> None:
                for _ in range(1200):  # at most 2 minutes
                    if sum(1 for _, s, p in outcomes if s == status and p == in_phase) >= count:
                        return
                    await asyncio.sleep(0.1)

            await until(202, "up", 100)
            await broker.stop()
            phase = "down"
            await until(503, "down", 20)
            assert await readiness(stack) == (503, "not_ready")
            await broker.start(keep_data=True)
            phase = "restarted"
            await until(202, "restarted", 50)
            assert await readiness(stack) == (200, "ready")
        finally:
            stop.set()
            await asyncio.gather(*senders)
        accepted = {i for i, s, _ in outcomes if s == 202}
        refused_while_down = [i for i, s, p in outcomes if s == 503 and p == "down"]
        assert len(refused_while_down) >= 20
        assert sum(1 for _, s, p in outcomes if s == 202 and p == "restarted") >= 50
        on_topic = [r.json()["id"] for r in await read_all(broker.bootstrap, stack.topic("events"))]
        # Every acknowledged id is there, once (the idempotent producer does not duplicate).
        assert sorted(i for i in on_topic if i in accepted) == sorted(accepted)
        assert len(accepted) >= 150


async def test_sigterm_drains_in_flight_writes_then_exits(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A rolling restart loses no 202: SIGTERM stops accepting, finishes writes, exits 0."""
    workdir: Path = tmp_path_factory.mktemp("gatewaydrain")
    async with running_stack(kafka_bootstrap, workdir, roles=("gateway",)) as stack:
        results: list[tuple[str, int | None]] = []
        first_answer = asyncio.Event()

        async def send(webhook_id: str) -> None:
            try:
                status, _, _ = await stack.post("helpdesk", ticket(), webhook_id=webhook_id)
            except aiohttp.ClientError:
                status = None  # refused or cut: the sender retries; nothing was promised
            results.append((webhook_id, status))
            first_answer.set()

        tasks = [asyncio.create_task(send(f"wh-{uuid.uuid4().hex}")) for _ in range(200)]
        await first_answer.wait()
        exit_code = await stack.procs["gateway"].stop(signal.SIGTERM)
        await asyncio.gather(*tasks)
        assert exit_code == 0, stack.procs["gateway"].log_text()[-2000:]
        assert {s for _, s in results} <= {202, None}
        accepted = {i for i, s in results if s == 202}
        assert accepted
        on_topic = {r.json()["id"] for r in await read_all(kafka_bootstrap, stack.topic("events"))}
        assert accepted <= on_topic
        log = stack.procs["gateway"].log_text()
        assert "shutting down gracefully" in log
