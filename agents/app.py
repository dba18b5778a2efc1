"""The Faust application: the only place a ``faust.App`` is made.

The worker runs the enrich and AI agents on it, in the consumer group ``<prefix>-worker``. The
sink worker has no Faust app: it runs on a plain aiokafka consumer in its own group
``<prefix>-sinks`` (:mod:`agents.sinks.wiring`), so sinks scale and lag independently of the
(expensive) AI stage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs

from agents import metrics
from agents.faust_app import ReleasingApp
from agents.pipeline import register_worker
from agents.resources import Resources
from schemas import codec
from schemas.config import HookstreamConfig
from streams.kafka.admin import insync_replicas, replication_factor
from streams.kafka.connection import faust_credentials
from streams.metrics.exposition import start_metrics_server

log = logging.getLogger(__name__)
CODEC_NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """Faust codec ``"orjson"``: values in and out of topics are plain JSON (schemas.codec)."""

    def _dumps(self, obj: Any) -> bytes:
        return codec.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return codec.loads(s)


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    ]


def create_app(
    config: HookstreamConfig,
    *,
    datadir: Path | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> ReleasingApp:
    codecs.register(CODEC_NAME, OrjsonCodec())
    app_id = f"{config.kafka.topic_prefix}-worker"
    state_dir = Path(os.environ.get("HOOKSTREAM_STATE_DIR", ".hookstream"))
    datadir = datadir or state_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    copies = _replication_factor(config)
    app = ReleasingApp(
        app_id,
        broker=broker_urls(config.kafka.bootstrap_servers),
        # TLS and SASL, from the same place as every other client (streams.kafka.connection).
        broker_credentials=faust_credentials(config.kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=config.kafka.partitions,
        # The topics Faust creates itself (its assignor's leader topic; changelogs and
        # repartition topics, should an agent ever use them) get the same copies and
        # min.insync.replicas as ours.
        topic_replication_factor=copies,
        Topic=_topic_class(insync_replicas(config.kafka, copies)),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=config.worker.commit_interval_s,
        broker_session_timeout=config.worker.session_timeout_s,
        broker_heartbeat_interval=config.worker.heartbeat_s,
        # Static membership when set (worker.group_instance_id): a restart within the
        # session timeout takes its partitions back without a rebalance.
        consumer_group_instance_id=config.worker.group_instance_id,
        producer_acks=-1,
        autodiscover=False,
        # Faust's default, pinned: at a rebalance, wait for every event that started (the
        # runner acks in offset order) and commit before the partitions go to another worker;
        # without it the new owner redoes the events in flight here (tests/integration/
        # test_rebalance.py fails: two results, two model calls).
        stream_wait_empty=True,
    )
    resources = Resources(
        config,
        client_id=app_id,
        state=True,
        journal_dir=state_dir / "answers" / app_id,
    )
    if metrics_port is not None:
        _serve_metrics(app, metrics_host, metrics_port, resources)
    register_worker(app, config, resources)
    return app


def _replication_factor(config: HookstreamConfig) -> int:
    """``kafka.replication_factor``, or the automatic one the cluster gives (min(3, brokers)).

    Faust takes one number when the app is made, before its event loop runs; the question to
    the cluster runs on a loop of its own in a thread, so this works whether or not the caller
    is inside one.
    """
    if config.kafka.replication_factor is not None:
        return config.kafka.replication_factor
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, replication_factor(config.kafka)).result()


def _topic_class(insync: int | None) -> type[faust.Topic]:
    """Faust's Topic with ``min.insync.replicas`` in the configs of every topic Faust creates.

    Faust declares its own topics with the replication factor it is given but the broker's
    ``min.insync.replicas`` (1 on most clusters): an acks=all write to them would then be
    acknowledged by one copy alone. A topic's own setting (none in hookstream) wins.
    """
    if insync is None:
        return faust.Topic
    extra = {"min.insync.replicas": str(insync)}

    class InsyncTopic(faust.Topic):
        def __init__(self, *args: Any, config: Mapping[str, Any] | None = None, **kw: Any):
            super().__init__(*args, config={**extra, **dict(config or {})}, **kw)

    return InsyncTopic


def _serve_metrics(app: faust.App, host: str, port: int, resources: Resources) -> None:
    """``/metrics`` and the Kubernetes probes from the worker's own event loop, for as long as
    the worker runs.

    ``/healthz`` (liveness): 503 once the Faust app crashed or is stopping, else 200; it does
    not ask Kafka, so a broker outage does not make Kubernetes restart every pod.
    ``/readyz`` (readiness): 200 once every agent has entered the shared resources, which
    starts the Kafka writer and, in the worker, loads both memories and the crash recovery
    (``Resources._start``) before any event is handled. It does not wait for a partition
    assignment: a replica beyond the partition count never gets one, and a rebalance would
    make every replica unready at once (a rollout and the PodDisruptionBudget would stall).
    """

    def alive() -> str | None:
        state = app.state
        return f"faust app {state}" if state in ("crashed", "stopping", "shutdown") else None

    def ready() -> str | None:
        not_alive = alive()
        if not_alive is not None:
            return not_alive
        if not app.started:
            return "starting: faust app not started yet"
        agents = len(app.agents)
        if resources.users < agents:
            return f"starting: {resources.users} of {agents} agents running (memories loading)"
        return None

    # Consumer lag per partition, read at scrape time (agents.metrics.consumer_lag).
    metrics.watch_consumer(app.conf.id, app)

    async def serve_metrics() -> None:
        runner = await start_metrics_server(host, port, alive=alive, ready=ready)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    app.task(serve_metrics)
