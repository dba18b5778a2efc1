"""What bench/capacity and bench/memory share: a worker-only stack on the shared broker.

A flow with one AI step against the bundled model simulator (its answer delay a knob), events
pre-loaded into ``<prefix>.events`` as the gateway writes them, worker processes started with
``hookstream worker``, and the per-process figures read from ``/proc``: CPU (utime + stime)
and RSS.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from schemas.codec import dumps  # noqa: E402
from schemas.config import KafkaSettings  # noqa: E402
from schemas.events import CloudEvent  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from tests.support.stack import SECRETS, Proc  # noqa: E402

PARTITIONS = 8
ROLES = ("events", "enriched", "results", "dlq", "receipts")
TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid``, seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have spent (/proc/stat, every state but idle
    and iowait): what the rounds' own processes did not spend of it is other work."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK_S


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listener_pid(port: int) -> int | None:
    """The process listening on ``port`` (the broker), if this user may see it."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def config(max_concurrency: int, ai_timeout_s: float) -> dict[str, Any]:
    return {
        "version": 1,
        "kafka": {
            "bootstrap_servers": "${KAFKA_BOOTSTRAP_SERVERS}",
            "topic_prefix": "${HOOKSTREAM_TOPIC_PREFIX}",
            "partitions": PARTITIONS,
        },
        "worker": {"allow_private_networks": True, "commit_interval_s": 0.5},
        "sources": [
            {
                "name": "helpdesk",
                "signature": {"scheme": "none"},
                "id_field": "id",
                "type_field": "event",
                "partition_key": "customer_id",
            }
        ],
        "providers": [
            {
                "name": "sim",
                "kind": "openai",
                "base_url": "${HOOKSTREAM_AI_BASE_URL}",
                "model": "sim-1",
                "timeout_s": ai_timeout_s,
            }
        ],
        "flows": [
            {
                "name": "triage",
                "match": {"source": "helpdesk", "types": ["ticket.*"]},
                "ai": {
                    "provider": "sim",
                    "prompt": "{{ data.message }}",
                    "output": {
                        "type": "object",
                        "properties": {
                            "sentiment": {
                                "type": "string",
                                "enum": ["positive", "neutral", "negative"],
                            },
                            "summary": {"type": "string"},
                        },
                        "required": ["sentiment", "summary"],
                    },
                    "max_concurrency": max_concurrency,
                },
                "sinks": [
                    {
                        "name": "crm",
                        "kind": "http",
                        "method": "PUT",
                        "url": "${HOOKSTREAM_CRM_URL}/customers/{{ data.customer_id }}",
                        "body": {"last_feedback_sentiment": "{{ result.sentiment }}"},
                    }
                ],
            }
        ],
    }


async def preload(bootstrap: str, prefix: str, events: int, keys: int) -> None:
    """``events`` webhooks as the gateway writes them, over ``keys`` customers (partition keys)."""
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        {f"{prefix}.{role}": {} for role in ROLES},
        partitions=PARTITIONS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for index in range(events):
            customer = f"cus_{index % keys:05d}"
            event = CloudEvent(
                id=f"ev-{prefix}-{index}",
                source="helpdesk",
                type="ticket.created",
                time=datetime.now(UTC),
                # each message its own prompt: no answer comes from the cache
                data={"customer_id": customer, "message": f"Bench {index}: export broken."},
                partitionkey=customer,
                traceid=uuid.uuid4().hex,
            )
            await producer.send(f"{prefix}.events", dumps(event), key=customer.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def count_records(consumer: AIOKafkaConsumer, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum((await consumer.end_offsets(tps)).values())


def worker(
    workdir: Path,
    prefix: str,
    name: str,
    cfg: dict[str, Any],
    urls: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> Proc:
    path = workdir / f"flows-{prefix}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {
        **os.environ,
        **SECRETS,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "HOOKSTREAM_AI_BASE_URL": urls["ai"],
        "HOOKSTREAM_CRM_URL": urls["crm"],
        "HOOKSTREAM_STATE_DIR": str(workdir / f"state-{name}"),
        **(extra_env or {}),
    }
    return Proc(name, ["worker", "-c", str(path), "-l", "info"], env, workdir / f"{name}.log")


async def stop_all(procs: list[Proc]) -> None:
    await asyncio.gather(*(proc.stop() for proc in procs))
